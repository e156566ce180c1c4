//! The rtnetlink socket: subscribe first, then dump.
//!
//! One socket carries both the multicast notifications and our dump
//! requests. It is bound to the notification groups *before* the first dump
//! is asked for, so a change that happens while the dump runs is queued as
//! a notification and applied after the dump: every notification is the
//! full state of one link, address or route, so replaying one that the dump
//! already contains is harmless, and nothing can fall between the two.
//!
//! The rtnetlink `Connection` (the future that reads and writes the socket)
//! is not spawned: it is polled right here, beside whatever waits on it,
//! so the watcher owns its socket outright and a dead socket is noticed
//! where it is used.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::proto::Connection;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

/// Why the socket cannot be used any more, or a dump failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// The socket stopped (a read error other than an overrun).
    #[error("the netlink socket closed")]
    Closed,
    /// The kernel refused a dump.
    #[error("netlink dump failed: {0}")]
    Dump(#[from] rtnetlink::Error),
}

/// What arrived on the socket.
pub(crate) enum Incoming {
    /// A notification, with its netlink header flags (`NLM_F_REPLACE`).
    Message(RouteNetlinkMessage, u16),
    /// The kernel dropped notifications (ENOBUFS): state must be re-read.
    Overrun,
    /// The socket is dead.
    Closed,
    /// Something else (nothing else is sent to a multicast listener).
    Other,
}

/// Which tables a dump reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DumpWhat {
    /// Links and addresses.
    pub addresses: bool,
    /// IPv4 and IPv6 routes (only needed for `interface = "auto"`).
    pub routes: bool,
}

/// What a dump returned.
#[derive(Debug, Default)]
pub(crate) struct Dumped {
    pub links: Vec<LinkMessage>,
    pub addresses: Vec<AddressMessage>,
    pub routes: Vec<RouteMessage>,
}

/// A subscribed rtnetlink socket.
pub(crate) struct Netlink {
    connection: Pin<Box<Connection<RouteNetlinkMessage>>>,
    handle: Handle,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl Netlink {
    /// Opens a socket subscribed to link and address changes, and to route
    /// changes when `routes`; asks for `receive_buffer` bytes of buffer.
    pub fn open(routes: bool, receive_buffer: usize) -> io::Result<Self> {
        let mut groups = vec![
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        if routes {
            groups.extend([MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route]);
        }
        let (mut connection, handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
        connection
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(receive_buffer)?;
        Ok(Self {
            connection: Box::pin(connection),
            handle,
            messages,
        })
    }

    /// The next notification. Cancel-safe.
    pub async fn next(&mut self) -> Incoming {
        tokio::select! {
            message = self.messages.next() => match message {
                None => Incoming::Closed,
                Some((message, _)) => {
                    let flags = message.header.flags;
                    match message.payload {
                        NetlinkPayload::InnerMessage(inner) => Incoming::Message(inner, flags),
                        NetlinkPayload::Overrun(_) => Incoming::Overrun,
                        _ => Incoming::Other,
                    }
                },
            },
            () = self.connection.as_mut() => Incoming::Closed,
        }
    }

    /// Reads the current state. Notifications that arrive meanwhile wait
    /// in the queue for [`Netlink::next`].
    pub async fn dump(&mut self, what: DumpWhat) -> Result<Dumped, SocketError> {
        let handle = self.handle.clone();
        let work = async move {
            let mut dumped = Dumped::default();
            if what.addresses {
                dumped.links = handle.link().get().execute().try_collect().await?;
                dumped.addresses = handle.address().get().execute().try_collect().await?;
            }
            if what.routes {
                let v4 = RouteMessageBuilder::<Ipv4Addr>::new().build();
                let v6 = RouteMessageBuilder::<Ipv6Addr>::new().build();
                dumped.routes = handle.route().get(v4).execute().try_collect().await?;
                let more: Vec<RouteMessage> =
                    handle.route().get(v6).execute().try_collect().await?;
                dumped.routes.extend(more);
            }
            Ok::<_, rtnetlink::Error>(dumped)
        };
        tokio::select! {
            dumped = work => Ok(dumped?),
            () = self.connection.as_mut() => Err(SocketError::Closed),
        }
    }
}
