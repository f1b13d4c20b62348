//! The add-on registry: the metadata rules ([`metadata`]) and the on-disk store ([`store`]).

pub mod metadata;
pub mod store;

pub use metadata::{Metadata, MetadataError};
pub use store::{Record, Status, Store, StoreError};

/// RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`) for seconds since the epoch.
pub fn rfc3339_utc(secs: i64) -> String {
    crate::time::UtcTime::from_unix(secs).rfc3339()
}
