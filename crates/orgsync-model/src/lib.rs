//! orgsync's domain model: parsed values, the STS snapshot, validation, the target state and the planner.
//!
//! **Architecture Invariant:** this crate does no IO and nothing async. Everything here is a
//! function of its inputs (the current date is an argument), so the sync rules can be tested
//! exhaustively without Redis, STS or a target.
//!
//! The flow: an STS client builds a [`snapshot::Snapshot`]; [`validate::validate`] turns it into a
//! [`validate::ValidSnapshot`] (or refuses it with structural faults); [`plan::plan`] compares it
//! with a [`target::TargetState`] under a customer's [`policy::Policy`] and returns a
//! [`plan::Plan`], which renders as text for people and JSON for scripts.

pub mod apply;
pub mod error_class;
pub mod fields;
pub mod ids;
pub mod plan;
pub mod policy;
pub mod render;
pub mod snapshot;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod validate;
