//! The effective address book: `[[peer]]` from the config file plus the
//! runtime address book in the state dir.
//!
//! Peers come from two places (INTERFACE.md, "Configuration"): the config
//! file, which peerd reads and never writes, and the runtime address book
//! ([`peerd_state::peers`]), which `peerctl peer add/remove` (and D-Bus,
//! and later pairing) change while the daemon runs. The daemon builds the
//! effective book from both with [`AddressBook::build`] at start, on
//! SIGHUP and after every `peer add/remove`, and hands it to the actors as
//! a [`Config`] whose `peers` is the whole book
//! ([`AddressBook::config_with_peers`]).
//!
//! A name or a public key in both places is a configuration error
//! ([`BookConflict`]): a name must mean one peer, and a received
//! announcement must be attributed to exactly one peer. Each source is
//! consistent in itself already (the config check refuses duplicates in the
//! file, the store refuses them among runtime peers).
//!
//! This lives in the daemon rather than in `peerd-config` or `peerd-state`
//! because it is the only crate that knows both: `peerd-config` stays a
//! parser of the file with no database, `peerd-state` stays free of the
//! config model, and neither depends on the other.

use std::fmt;
use std::path::{Path, PathBuf};

use peerd_config::{Config, PeerConfig, PeerFormat};
use peerd_core::{PeerName, PublicKey};
use peerd_state::RuntimePeer;

/// Where a peer of the address book comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerSource {
    /// A `[[peer]]` in the config file (read-only at run time).
    ConfigFile,
    /// The runtime address book in the state dir (`peerctl peer add`).
    Runtime,
}

impl PeerSource {
    /// `"config"` or `"runtime"`, for JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigFile => "config",
            Self::Runtime => "runtime",
        }
    }
}

impl fmt::Display for PeerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer of the effective address book.
#[derive(Debug, Clone)]
pub struct BookPeer {
    /// The peer, in the config's terms (a runtime peer becomes a sealed
    /// `PeerConfig`, see [`runtime_peer_config`]).
    pub peer: PeerConfig,
    /// Where it comes from.
    pub source: PeerSource,
}

/// The files the two halves of the address book live in, named in
/// conflict messages so the user knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookSources {
    /// The config file (`--config`).
    pub config_file: PathBuf,
    /// The state database holding the runtime peers
    /// ([`peerd_state::Store::path`]).
    pub state_db: PathBuf,
}

/// A peer that is in both halves of the address book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookConflict {
    /// The same name in the file and in the runtime address book.
    #[error(
        "peer {name} is both a [[peer]] in {} and a runtime peer in {} (added with `peerctl peer add`); \
         a name may be in only one of them: remove or rename the [[peer]] in the file",
        config_file.display(),
        state_db.display()
    )]
    SameName {
        /// The name.
        name: PeerName,
        /// The config file.
        config_file: PathBuf,
        /// The state database.
        state_db: PathBuf,
    },
    /// The same public key for a `[[peer]]` and a runtime peer.
    #[error(
        "[[peer]] {file_peer} in {} and runtime peer {runtime_peer} in {} (added with `peerctl peer add`) \
         have the same public key; every host has its own key: remove one of them",
        config_file.display(),
        state_db.display()
    )]
    SameKey {
        /// The `[[peer]]`'s name.
        file_peer: PeerName,
        /// The runtime peer's name.
        runtime_peer: PeerName,
        /// The config file.
        config_file: PathBuf,
        /// The state database.
        state_db: PathBuf,
    },
}

/// Every conflict found (at least one), one per line when printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookConflicts(pub Vec<BookConflict>);

impl fmt::Display for BookConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BookConflicts {}

/// Why a peer cannot be added to the runtime address book (checked
/// before it is stored; the store itself refuses a name or key taken by
/// another runtime peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddRefused {
    /// The name is taken (by a `[[peer]]` or a runtime peer).
    #[error("peer {name} is in the address book already ({where_})")]
    NameTaken {
        /// The name.
        name: PeerName,
        /// Where it is, for the message.
        where_: String,
    },
    /// The key is another peer's.
    #[error("peer {other} ({where_}) has this public key already; every host has its own key")]
    KeyTaken {
        /// The peer that has the key.
        other: PeerName,
        /// Where that peer is, for the message.
        where_: String,
    },
}

/// The effective address book: every `[[peer]]` in file order, then every
/// runtime peer by name. Names and keys are unique across both.
#[derive(Debug, Clone)]
pub struct AddressBook {
    peers: Vec<BookPeer>,
    sources: BookSources,
}

/// A runtime peer as the config would describe it: `format = "sealed"`
/// with its key and flags.
pub fn runtime_peer_config(p: &RuntimePeer) -> PeerConfig {
    PeerConfig {
        name: p.name.clone(),
        email: p.email.clone(),
        public_key: Some(p.public_key),
        announce: p.announce,
        auto_connect: p.auto_connect,
        accept_unsigned: p.accept_unsigned,
        format: PeerFormat::Sealed,
    }
}

impl AddressBook {
    /// Merges the config's `[[peer]]`s with the runtime peers, reporting
    /// every name and key found in both.
    pub fn build(
        config: &Config,
        runtime: &[RuntimePeer],
        sources: BookSources,
    ) -> Result<Self, BookConflicts> {
        let mut conflicts = Vec::new();
        for r in runtime {
            if config.peer(r.name.as_str()).is_some() {
                conflicts.push(BookConflict::SameName {
                    name: r.name.clone(),
                    config_file: sources.config_file.clone(),
                    state_db: sources.state_db.clone(),
                });
            }
            if let Some(f) = config
                .peers
                .iter()
                .find(|f| f.public_key == Some(r.public_key))
            {
                conflicts.push(BookConflict::SameKey {
                    file_peer: f.name.clone(),
                    runtime_peer: r.name.clone(),
                    config_file: sources.config_file.clone(),
                    state_db: sources.state_db.clone(),
                });
            }
        }
        if !conflicts.is_empty() {
            return Err(BookConflicts(conflicts));
        }
        let mut runtime: Vec<&RuntimePeer> = runtime.iter().collect();
        runtime.sort_by(|a, b| a.name.cmp(&b.name));
        let peers = config
            .peers
            .iter()
            .map(|p| BookPeer {
                peer: p.clone(),
                source: PeerSource::ConfigFile,
            })
            .chain(runtime.into_iter().map(|r| BookPeer {
                peer: runtime_peer_config(r),
                source: PeerSource::Runtime,
            }))
            .collect();
        Ok(Self { peers, sources })
    }

    /// Every peer: the file's in file order, then the runtime ones by name.
    pub fn peers(&self) -> &[BookPeer] {
        &self.peers
    }

    /// The peer with this name.
    pub fn get(&self, name: &str) -> Option<&BookPeer> {
        self.peers.iter().find(|p| p.peer.name.as_str() == name)
    }

    /// The peer with this public key.
    pub fn by_key(&self, key: &PublicKey) -> Option<&BookPeer> {
        self.peers
            .iter()
            .find(|p| p.peer.public_key.as_ref() == Some(key))
    }

    /// Whether `peer` may be added to the runtime address book: its name
    /// and its key must be new to the whole book. Check this before
    /// [`peerd_state::Store::add_peer`], then rebuild the book.
    pub fn check_addition(&self, peer: &RuntimePeer) -> Result<(), AddRefused> {
        if let Some(p) = self.get(peer.name.as_str()) {
            return Err(AddRefused::NameTaken {
                name: peer.name.clone(),
                where_: self.describe(p.source),
            });
        }
        if let Some(p) = self.by_key(&peer.public_key) {
            return Err(AddRefused::KeyTaken {
                other: p.peer.name.clone(),
                where_: self.describe(p.source),
            });
        }
        Ok(())
    }

    fn describe(&self, source: PeerSource) -> String {
        match source {
            PeerSource::ConfigFile => {
                format!("a [[peer]] in {}", self.sources.config_file.display())
            },
            PeerSource::Runtime => "added with `peerctl peer add`".to_owned(),
        }
    }

    /// The files the book was built from.
    pub fn sources(&self) -> &BookSources {
        &self.sources
    }

    /// The config file the `[[peer]]`s came from.
    pub fn config_file(&self) -> &Path {
        &self.sources.config_file
    }

    /// Every peer as a `PeerConfig`, in [`Self::peers`] order.
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.peers.iter().map(|p| p.peer.clone()).collect()
    }

    /// `config` with `peers` replaced by the whole book: what the actors
    /// (courier, connector) are given, since they look peers up in
    /// [`Config::peers`]. `[[service]] peers` still name only file peers
    /// (the config check ensures that).
    pub fn config_with_peers(&self, config: &Config) -> Config {
        Config {
            peers: self.peer_configs(),
            ..config.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use peerd_core::Identity;

    use super::*;

    const CONFIG: &str = r#"
[identity]
name = "alice"
[mail]
address = "alice@isp-a.example"
[mail.smtp]
host = "smtp.isp-a.example"
[mail.incoming]
protocol = "imap"
host = "mail.isp-a.example"

[[peer]]
name = "hitoshi"
email = "hitoshi@isp-b.example"
public_key = "KEY1"

[[peer]]
name = "me-on-phone"
email = "me@example.org"
format = "plain"
"#;

    fn key(seed: u8) -> PublicKey {
        Identity::from_seed(&[seed; 32]).public_key()
    }

    fn config() -> Config {
        let text = CONFIG.replace("KEY1", &key(1).to_string());
        peerd_config::parse(&text, Path::new("/etc/peerd/peerd.toml"), 0o644)
            .expect("a valid config")
            .config
    }

    fn sources() -> BookSources {
        BookSources {
            config_file: "/etc/peerd/peerd.toml".into(),
            state_db: "/var/lib/peerd/peerd.redb".into(),
        }
    }

    fn runtime(name: &str, seed: u8) -> RuntimePeer {
        RuntimePeer::new(
            name.parse().unwrap(),
            format!("{name}@isp-c.example").parse().unwrap(),
            key(seed),
        )
    }

    #[test]
    fn the_book_is_the_file_then_the_runtime_peers_by_name() {
        let mut zoe = runtime("zoe", 4);
        zoe.announce = false;
        zoe.accept_unsigned = true;
        let book = AddressBook::build(&config(), &[zoe, runtime("kenji", 3)], sources()).unwrap();
        let names: Vec<(&str, PeerSource)> = book
            .peers()
            .iter()
            .map(|p| (p.peer.name.as_str(), p.source))
            .collect();
        assert_eq!(
            names,
            [
                ("hitoshi", PeerSource::ConfigFile),
                ("me-on-phone", PeerSource::ConfigFile),
                ("kenji", PeerSource::Runtime),
                ("zoe", PeerSource::Runtime),
            ]
        );
        let zoe = &book.get("zoe").unwrap().peer;
        assert_eq!(zoe.format, PeerFormat::Sealed);
        assert_eq!(zoe.public_key, Some(key(4)));
        assert_eq!(zoe.email.as_str(), "zoe@isp-c.example");
        assert!(!zoe.announce && zoe.auto_connect && zoe.accept_unsigned);
        assert_eq!(book.by_key(&key(3)).unwrap().peer.name.as_str(), "kenji");
        assert_eq!(book.by_key(&key(1)).unwrap().source, PeerSource::ConfigFile);
        assert!(book.by_key(&key(9)).is_none());

        // What the actors get: the same config with every peer.
        let merged = book.config_with_peers(&config());
        assert_eq!(merged.peers.len(), 4);
        assert!(merged.peer("kenji").is_some());
        assert_eq!(merged.identity.name.as_str(), "alice");
    }

    #[test]
    fn a_name_or_key_in_both_places_is_reported_naming_both_files() {
        let err = AddressBook::build(
            &config(),
            &[
                runtime("hitoshi", 5),
                runtime("kenji", 1),
                runtime("zoe", 4),
            ],
            sources(),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert_eq!(
            err.to_string(),
            "peer hitoshi is both a [[peer]] in /etc/peerd/peerd.toml and a runtime peer in \
             /var/lib/peerd/peerd.redb (added with `peerctl peer add`); a name may be in only one \
             of them: remove or rename the [[peer]] in the file\n\
             [[peer]] hitoshi in /etc/peerd/peerd.toml and runtime peer kenji in \
             /var/lib/peerd/peerd.redb (added with `peerctl peer add`) have the same public key; \
             every host has its own key: remove one of them"
        );
        // The same name with the same key is both conflicts.
        let err = AddressBook::build(&config(), &[runtime("hitoshi", 1)], sources()).unwrap_err();
        assert!(matches!(
            err.0.as_slice(),
            [BookConflict::SameName { .. }, BookConflict::SameKey { .. }]
        ));
    }

    #[test]
    fn an_addition_must_be_new_to_the_whole_book() {
        let book = AddressBook::build(&config(), &[runtime("kenji", 3)], sources()).unwrap();
        book.check_addition(&runtime("zoe", 4)).unwrap();
        assert_eq!(
            book.check_addition(&runtime("me-on-phone", 4))
                .unwrap_err()
                .to_string(),
            "peer me-on-phone is in the address book already (a [[peer]] in /etc/peerd/peerd.toml)"
        );
        assert_eq!(
            book.check_addition(&runtime("kenji", 4))
                .unwrap_err()
                .to_string(),
            "peer kenji is in the address book already (added with `peerctl peer add`)"
        );
        assert_eq!(
            book.check_addition(&runtime("zoe", 1))
                .unwrap_err()
                .to_string(),
            "peer hitoshi (a [[peer]] in /etc/peerd/peerd.toml) has this public key already; \
             every host has its own key"
        );
        assert!(matches!(
            book.check_addition(&runtime("zoe", 3)),
            Err(AddRefused::KeyTaken { other, .. }) if other.as_str() == "kenji"
        ));
    }

    #[test]
    fn runtime_peers_from_a_real_store_merge_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = peerd_state::Store::open_in(dir.path()).unwrap();
        store.add_peer(&runtime("kenji", 3)).unwrap();
        store.close().unwrap();
        let store = peerd_state::Store::open_in(dir.path()).unwrap();
        let sources = BookSources {
            config_file: "/etc/peerd/peerd.toml".into(),
            state_db: store.path().to_path_buf(),
        };
        let book = AddressBook::build(&config(), &store.runtime_peers().unwrap(), sources).unwrap();
        assert_eq!(book.get("kenji").unwrap().source, PeerSource::Runtime);
        // A [[peer]] added to the file later under the same name: refused
        // at the next start or SIGHUP, naming both places.
        let text = format!(
            "{}\n[[peer]]\nname = \"kenji\"\nemail = \"k@isp-c.example\"\npublic_key = \"{}\"\n",
            CONFIG.replace("KEY1", &key(1).to_string()),
            key(7)
        );
        let edited = peerd_config::parse(&text, Path::new("/etc/peerd/peerd.toml"), 0o644)
            .unwrap()
            .config;
        let err = AddressBook::build(
            &edited,
            &store.runtime_peers().unwrap(),
            book.sources().clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("peer kenji is both") && err.contains(&store.path().display().to_string()),
            "{err}"
        );
    }
}
