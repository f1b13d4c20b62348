//! The add-on registry: the metadata rules ([`metadata`]) and the on-disk store ([`store`]).

pub mod metadata;
pub mod store;

pub use metadata::{Metadata, MetadataError};
pub use store::{Record, Status, Store, StoreError};

/// RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`) for seconds since the epoch (proleptic Gregorian).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_date_command() {
        for secs in [0i64, 951_782_400, 1_764_331_203, 4_102_444_799] {
            let out = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
                .output()
                .unwrap();
            assert_eq!(super::rfc3339_utc(secs), String::from_utf8_lossy(&out.stdout).trim());
        }
    }
}
