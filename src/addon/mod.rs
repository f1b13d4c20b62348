//! The add-on registry: the metadata rules ([`metadata`]), the on-disk store ([`store`]), the
//! state directory's inter-process lock ([`lock`]) and registering from local files
//! ([`register`]).

pub mod backend;
pub mod catalog;
pub mod lock;
pub mod metadata;
pub mod register;
pub mod store;

pub use lock::{LockError, StateLock};
pub use metadata::{Metadata, MetadataError};
pub use register::{register, RegisterError};
pub use store::{Record, Status, Store, StoreError};

/// RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`) for seconds since the epoch.
pub fn rfc3339_utc(secs: i64) -> String {
    crate::time::UtcTime::from_unix(secs).rfc3339()
}
