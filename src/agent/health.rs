//! Agent health as data: what an agent depends on and how each dependency stands,
//! reported by [`super::Agent::dependencies`] and read by `/health/ready`,
//! `/health/detailed`, `/stats`, `/metrics` and the start-up line.
//!
//! Readiness and "starting" are derived here, from the data alone: an agent with no
//! dependencies is ready; otherwise every group needs one member known usable, and a
//! group none of whose members is usable yet, some not having answered a check, is
//! starting. Plain data: nothing here does I/O, waits or locks.

use std::borrow::Cow;
use std::sync::Arc;

use crate::backend::{standing, Endpoint, Standing};

/// How one dependency stands: `Unknown` (no check has answered yet), `Up` (usable:
/// its last check answered healthy, its breaker not open) or `Down`.
pub use crate::backend::EndpointState as DependencyState;

/// What kind of dependencies a group holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependencyKind {
    /// LLM providers (`checks.providers` in `/health/detailed`).
    LlmProviders,
    /// Upstream agents in proxy mode (`checks.upstreams`).
    UpstreamAgents,
    /// Anything else an agent depends on, under this name (`checks.<name>`).
    Other(Cow<'static, str>),
}

/// One dependency.
#[derive(Clone, Debug)]
pub struct DependencyHealth {
    /// A provider's name, an upstream's URL, or whatever names a custom dependency.
    pub name: String,
    /// Whether it can be used now.
    pub state: DependencyState,
    /// A backend's live state and figures, for `/metrics` and `/stats` (none for a
    /// dependency that is not a [`crate::backend`] endpoint).
    pub endpoint: Option<Arc<Endpoint>>,
}

impl DependencyHealth {
    /// A dependency that is not a backend endpoint.
    pub fn new(name: impl Into<String>, state: DependencyState) -> Self {
        DependencyHealth {
            name: name.into(),
            state,
            endpoint: None,
        }
    }

    /// A backend endpoint, as it stands now.
    pub fn of_endpoint(endpoint: &Arc<Endpoint>) -> Self {
        DependencyHealth {
            name: endpoint.name().to_owned(),
            state: endpoint.state(),
            endpoint: Some(endpoint.clone()),
        }
    }
}

/// A set of interchangeable dependencies: the agent can answer while one of them is up.
#[derive(Clone, Debug)]
pub struct DependencyGroup {
    /// What the members are.
    pub kind: DependencyKind,
    /// One entry per dependency.
    pub members: Vec<DependencyHealth>,
    /// Requests refused because no member had room (LLM `saturated`); `None` where the
    /// members have no concurrency cap.
    pub saturated_requests: Option<u64>,
}

impl DependencyGroup {
    /// A group of `kind` without a concurrency figure.
    pub fn new(kind: DependencyKind, members: Vec<DependencyHealth>) -> Self {
        DependencyGroup {
            kind,
            members,
            saturated_requests: None,
        }
    }

    /// Members known usable.
    pub fn usable(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state == DependencyState::Up)
            .count()
    }

    /// Ready once a member is known usable; starting while none is and some have not
    /// answered a check yet; down otherwise (also when the group is empty).
    pub fn standing(&self) -> Standing {
        standing(self.members.iter().map(|m| m.state))
    }

    /// Why the group keeps the agent from being ready, in `/health/ready`'s words.
    pub fn reason(&self, standing: Standing) -> Cow<'static, str> {
        let starting = standing == Standing::Starting;
        match (&self.kind, starting) {
            (DependencyKind::LlmProviders, true) => {
                "waiting for the first health probe of the LLM providers".into()
            }
            (DependencyKind::LlmProviders, false) => "no LLM provider is usable".into(),
            (DependencyKind::UpstreamAgents, true) => {
                "waiting for the first health check of the upstream agents".into()
            }
            (DependencyKind::UpstreamAgents, false) => "no upstream agent is usable".into(),
            (DependencyKind::Other(name), true) => {
                format!("waiting for the first health check of {name}").into()
            }
            (DependencyKind::Other(name), false) => format!("no {name} is usable").into(),
        }
    }
}

/// Why the agent is not ready: the first group that is down, else the first that is
/// starting (with [`Standing::Starting`]); `Ok` when every group is ready.
pub fn readiness(groups: &[DependencyGroup]) -> Result<(), (Standing, Cow<'static, str>)> {
    let mut starting = None;
    for g in groups {
        match g.standing() {
            Standing::Ready => {}
            Standing::Down => return Err((Standing::Down, g.reason(Standing::Down))),
            Standing::Starting => {
                starting.get_or_insert_with(|| g.reason(Standing::Starting));
            }
        }
    }
    match starting {
        Some(reason) => Err((Standing::Starting, reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyState::*;

    fn group(kind: DependencyKind, states: &[DependencyState]) -> DependencyGroup {
        DependencyGroup::new(
            kind,
            states
                .iter()
                .enumerate()
                .map(|(i, s)| DependencyHealth::new(format!("d{i}"), *s))
                .collect(),
        )
    }

    #[test]
    fn readiness_and_starting_come_from_the_data() {
        assert_eq!(readiness(&[]), Ok(()));
        let llm = |s: &[DependencyState]| group(DependencyKind::LlmProviders, s);
        assert_eq!(readiness(&[llm(&[Up, Unknown])]), Ok(()));
        let (st, why) = readiness(&[llm(&[Down, Unknown])]).unwrap_err();
        assert_eq!(st, Standing::Starting);
        assert_eq!(
            why,
            "waiting for the first health probe of the LLM providers"
        );
        let (st, why) = readiness(&[llm(&[Down, Down])]).unwrap_err();
        assert_eq!(
            (st, why.as_ref()),
            (Standing::Down, "no LLM provider is usable")
        );
        let db = group(DependencyKind::Other("database".into()), &[Down]);
        let (st, why) = readiness(&[llm(&[Unknown]), db]).unwrap_err();
        assert_eq!(
            (st, why.as_ref()),
            (Standing::Down, "no database is usable")
        );
        assert_eq!(llm(&[]).standing(), Standing::Down);
    }
}
