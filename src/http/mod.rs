//! The HTTP edge: routing, bodies, header values and the one error type.
//!
//! It knows HTTP and nothing about agents.

pub mod activity;
pub mod body;
pub mod compress;
pub mod error;
pub mod headers;
pub mod reply;
pub mod router;

pub use body::ResponseBody;
pub use error::HttpError;
pub use reply::Reply;
pub use router::{route, Route, RouteMatch};
