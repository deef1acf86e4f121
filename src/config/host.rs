//! `HOST`: an address, or a host name resolved once at start as Node resolves it for
//! `listen` (an IPv4 address preferred, so `localhost` listens on 127.0.0.1).
//!
//! It must never resolve again after start.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// `HOST`: what was asked for and the address it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenHost {
    name: String,
    ip: IpAddr,
}

impl ListenHost {
    /// The address `HOST` resolved to.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl std::str::FromStr for ListenHost {
    type Err = String;

    /// An IP address as is; a host name resolved as Node resolves it for `listen`,
    /// taking an IPv4 address when there is one.
    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.trim();
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(ListenHost {
                name: name.to_owned(),
                ip,
            });
        }
        if name.is_empty() {
            return Err("an address or host name is required".into());
        }
        let addrs: Vec<SocketAddr> = (name, 0)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve host name {name:?}: {e}"))?
            .collect();
        let pick = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .ok_or_else(|| format!("host name {name:?} resolves to no address"))?;
        Ok(ListenHost {
            name: name.to_owned(),
            ip: pick.ip(),
        })
    }
}

impl std::fmt::Display for ListenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.ip.to_string() {
            write!(f, "{}", self.ip)
        } else {
            write!(f, "{} ({})", self.name, self.ip)
        }
    }
}
