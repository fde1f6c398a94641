//! The custom resources (`DovecotBackendUpgrade`, `DovecotRing`): spec, status and the step enum, with no I/O.

mod ring;
mod spec;
mod status;
mod step;

pub use ring::*;
pub use spec::*;
pub use status::*;
pub use step::*;

/// Annotation whose new value asks to retry failed backends (works from Git, unlike a status edit).
pub const RETRY_ANNOTATION: &str = "mailops.io/retry";

/// Annotation (`true`) that lets a DBU be deleted although backends it took out could not be
/// put back (e.g. no director answers): they stay as they are, and the next DBU of the
/// StatefulSet takes them over from the ring's lock.
pub const FORCE_DELETE_ANNOTATION: &str = "mailops.io/force-delete";

/// DovecotRing annotation releasing left-out backends (`pod@token`, comma-separated): the
/// ring stops keeping them out; a human has put them back, or will. A new value is acted on
/// once.
pub const RELEASE_ANNOTATION: &str = "mailops.io/release";

/// Pod template annotation of the backend StatefulSet that `spec.revision` names.
pub const REVISION_ANNOTATION: &str = "mailops.io/revision";

/// Annotation naming the target revision a human approved after the canary.
pub const APPROVE_ANNOTATION: &str = "mailops.io/approve";

#[cfg(test)]
mod tests;
