//! The `baton` commands that have a module of their own.

pub mod cancel;
pub mod follow;
pub mod intake;
pub mod print;
pub mod serve;
pub mod session;
pub mod thread;
pub mod webhooks;

pub(crate) use super::EXIT_INVALID;
