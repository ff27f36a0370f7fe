//! The identifiers that cross Baton's boundaries, each a type of its own so that a build id cannot
//! be passed where a session id belongs, and the fencing token that orders a build's claims.
//!
//! The ids are text on the wire and in the ledger (a backend makes them), so each serializes as a
//! plain string and reads as `&str` wherever text is wanted.

use serde::{Deserialize, Serialize};

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

text_id!(
    /// A build's id: the backend's, unique per build; the key of its checkpoint and ledger rows.
    BuildId
);
text_id!(
    /// A project's id: one chain of sessions, whose jobs never overlap.
    ProjectId
);
text_id!(
    /// A Claude session's id, as the CLI names it.
    SessionId
);

/// A build's fencing token: raised by every claim, so that the ledger refuses the writes of a
/// worker whose claim a newer one replaced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fence(pub i64);

impl Fence {
    /// The token as the ledger stores it.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_as_plain_strings() {
        let id = BuildId::from("b-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"b-1\"");
        let back: BuildId = serde_json::from_str("\"b-1\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(back, "b-1");
        assert_eq!(serde_json::to_string(&Fence(7)).unwrap(), "7");
    }

    #[test]
    fn an_id_reads_as_text_where_text_is_wanted() {
        fn len(s: &str) -> usize {
            s.len()
        }
        let id = SessionId::from("abc".to_string());
        assert_eq!(len(&id), 3);
        assert_eq!(format!("{id}"), "abc");
    }
}
