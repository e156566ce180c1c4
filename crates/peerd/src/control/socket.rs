//! The socket file and the accept loop.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Group, chown};
use peerd_config::ControlConfig;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::access::AccessPolicy;
use super::connection;
use super::{ControlApi, Limits};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket's directory could not be created.
    #[error("cannot create the directory {} for the control socket: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket is in the way; it is left alone.
    #[error("{} exists and is not a socket; remove it or choose another [control] socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Another process (another peerd?) accepts connections on the socket.
    #[error("{} is in use: another peerd is running with this [control] socket", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Creating, inspecting or preparing the socket failed.
    #[error("cannot set up the control socket {}: {step}: {source}", path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// A bound control socket, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct ControlSocket {
    listener: StdUnixListener,
    /// Removes the socket file when the server is done with it.
    file: SocketFile,
    policy: Arc<AccessPolicy>,
    limits: Limits,
}

/// Creates the control socket of `config`: its directory if missing (mode
/// 0755), the socket with `config.mode` and group `config.group`. A socket
/// file left by a peerd that is gone is replaced; one that a running
/// process listens on, or any other file, is an error.
///
/// The socket is created under a temporary name, given its mode and group,
/// and only then renamed into place, so it is never reachable with other
/// permissions than the configured ones. When the group does not exist or
/// cannot be set, the socket keeps peerd's group and a warning says so
/// (then only root may change anything).
///
/// # Errors
/// See [`BindError`].
pub fn bind(config: &ControlConfig) -> Result<ControlSocket, BindError> {
    let path = config.socket.clone();
    let err = |step, source| BindError::Socket {
        path: path.clone(),
        step,
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| BindError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    check_existing(&path)?;
    let tmp = temporary_path(&path);
    remove_stale(&tmp)?;
    let listener = StdUnixListener::bind(&tmp).map_err(|e| err("bind", e))?;
    // From here on the file is removed on every error path (and, once
    // renamed, when the server is done).
    let mut file = SocketFile::of(&tmp).map_err(|e| err("stat", e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(config.mode))
        .map_err(|e| err("chmod", e))?;
    set_group(&tmp, &config.group);
    fs::rename(&tmp, &path).map_err(|e| err("rename into place", e))?;
    file.path.clone_from(&path);
    listener
        .set_nonblocking(true)
        .map_err(|e| err("set non-blocking", e))?;
    info!(
        path = %path.display(),
        mode = %format!("{:04o}", config.mode),
        group = %config.group,
        "Control socket listening"
    );
    Ok(ControlSocket {
        listener,
        file,
        policy: Arc::new(AccessPolicy::new(config.group.clone())),
        limits: Limits::default(),
    })
}

/// Refuses a path that is in use or not a socket; a stale socket is left
/// for the rename to replace.
fn check_existing(path: &Path) -> Result<(), BindError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Socket {
                path: path.to_owned(),
                step: "inspect the existing file",
                source,
            });
        },
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_owned(),
        });
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            info!(path = %path.display(), "Replacing a stale control socket (nothing listens on it)");
            Ok(())
        },
        Err(source) => Err(BindError::Socket {
            path: path.to_owned(),
            step: "check whether the existing socket is in use",
            source,
        }),
    }
}

/// Where the socket is made before it is renamed into place: beside it, so
/// the rename stays on one file system.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    path.with_file_name(name)
}

/// Removes a temporary socket left by a peerd that died while binding.
fn remove_stale(tmp: &Path) -> Result<(), BindError> {
    match fs::symlink_metadata(tmp) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(tmp).map_err(|source| BindError::Socket {
                path: tmp.to_owned(),
                step: "remove a stale temporary socket",
                source,
            })
        },
        Ok(_) => Err(BindError::NotASocket {
            path: tmp.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

/// Gives the socket the configured group, or says why it cannot.
fn set_group(path: &Path, group: &str) {
    match Group::from_name(group) {
        Ok(Some(g)) => {
            if let Err(e) = chown(path, None, Some(g.gid)) {
                warn!(group, error = %e, "Cannot give the control socket the group of [control] group; only root may change anything");
            }
        },
        Ok(None) => warn!(
            group,
            "The group of [control] group does not exist; only root may change anything through the control socket"
        ),
        Err(e) => warn!(group, error = %e, "Cannot look up the group of [control] group"),
    }
}

/// The socket file this server created; removed on drop if it is still
/// the same file (a newer peerd may have replaced it).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<Self> {
        let meta = fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl ControlSocket {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Replaces the default timeouts and connection limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Accepts connections and serves each in its own task until
    /// `shutdown` is cancelled; then waits for those tasks to end and
    /// removes the socket file.
    ///
    /// # Errors
    /// Only when the socket cannot be registered with the runtime; errors
    /// of single connections are logged, never returned.
    pub async fn serve<A: ControlApi>(
        self,
        api: Arc<A>,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let Self {
            listener,
            file,
            policy,
            limits,
        } = self;
        let listener = UnixListener::from_std(listener)?;
        let pools = Arc::new(connection::Pools {
            privileged: Arc::new(Semaphore::new(limits.max_privileged)),
            unprivileged: Arc::new(Semaphore::new(limits.max_unprivileged)),
        });
        let limits = Arc::new(limits);
        let tasks = TaskTracker::new();
        let mut accept_failures = 0u32;
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    accept_failures = 0;
                    stream
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin, then try again.
                    accept_failures = accept_failures.saturating_add(1);
                    let pause = Duration::from_millis(10 << accept_failures.min(7));
                    warn!(error = %e, "Cannot accept a control connection; retrying in {}ms", pause.as_millis());
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                },
            };
            let span = info_span!(
                "control",
                uid = tracing::field::Empty,
                gid = tracing::field::Empty,
                pid = tracing::field::Empty
            );
            tasks.spawn(
                connection::run(
                    stream,
                    Arc::clone(&api),
                    Arc::clone(&policy),
                    Arc::clone(&pools),
                    Arc::clone(&limits),
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
        drop(listener);
        tasks.close();
        tasks.wait().await;
        drop(file);
        info!("Control socket closed");
        Ok(())
    }
}
