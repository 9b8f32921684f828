//! Problems found while reading that do not stop the read: each names the object and the element.

use serde::Serialize;
use uuid::Uuid;

/// One problem in the data STS returned. The object it concerns is skipped or read without the element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadIssue {
    /// What kind of problem.
    pub code: ReadIssueCode,
    /// The STS object type (`OrganisationEnhed`, `Bruger`, ...).
    pub object_kind: String,
    /// The object's UUID, when it has a usable one.
    pub object: Option<Uuid>,
    /// The element path inside the object, e.g. `RelationListe/Overordnet/ReferenceID`.
    pub element: String,
    /// What happened, for people.
    pub message: String,
}

impl std::fmt::Display for ReadIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.object {
            Some(id) => write!(
                f,
                "{} {id}: {}: {}",
                self.object_kind, self.element, self.message
            ),
            None => write!(
                f,
                "{}: {}: {}",
                self.object_kind, self.element, self.message
            ),
        }
    }
}

/// The kinds of [`ReadIssue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadIssueCode {
    /// An element's value is not what the schema allows (not a UUID, not a date-time).
    Malformed,
    /// A mandatory or expected element is missing.
    Missing,
    /// An object belongs to another Organisation and was left out.
    ForeignObject,
    /// An object referred to was not returned by STS.
    NotReturned,
    /// A value we cannot use (a URN reference) was ignored.
    Ignored,
}
