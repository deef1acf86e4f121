//! `PROXY_BALANCE`: how requests are spread over the upstream agents. The order itself
//! is [`crate::backend::order`]'s (the same as the LLM providers'); this only names
//! the choices the proxy offers.

use crate::backend::order::Policy;

/// How requests are spread over upstreams (`PROXY_BALANCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Each request starts at the next upstream in turn.
    RoundRobin,
    /// Each request starts at the upstream with the fewest requests in flight.
    LeastInflight,
}

impl Balance {
    /// The ordering policy it stands for.
    pub fn policy(self) -> Policy {
        match self {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::LeastInflight => Policy::LeastInflight,
        }
    }
}
