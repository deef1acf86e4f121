//! Listening sockets: one per worker, all bound to the same address with SO_REUSEPORT
//! so the kernel spreads connections across workers.
//!
//! Binding port 0 picks a free port once; the other workers bind that same port. A
//! port some other process already listens on is refused before the group is bound:
//! SO_REUSEPORT would otherwise let a second agentd (same user) join the first one's
//! group and serve part of its traffic with its own configuration. It must never bind
//! a socket without SO_REUSEPORT that it keeps: the workers' sockets must all be able
//! to share the port.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Opens `count` listeners on `addr`. Fails with `AddrInUse` when another socket
/// already listens on `addr`'s port.
pub fn bind_all(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
    let first = bind_one(addr, backlog)?;
    let actual = first.local_addr()?;
    let mut all = Vec::with_capacity(count);
    all.push(first);
    for _ in 1..count {
        all.push(bind_one(actual, backlog)?);
    }
    Ok(all)
}

/// Binds `addr` once without SO_REUSEPORT (and lets it go): the bind fails when any
/// socket listens on that port, whatever options it was bound with. SO_REUSEADDR keeps
/// connections of an earlier run in TIME_WAIT from counting as a holder.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(false)?;
    }
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another process"),
        )),
        other => other,
    }
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_another_group_is_refused() {
        let held = bind_all("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let addr = held[0].local_addr().unwrap();
        let err = bind_all(addr, 2, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        drop(held);
        // Free again once the holder is gone.
        let again = bind_all(addr, 2, 16).unwrap();
        assert_eq!(again.len(), 2);
    }
}
