#![no_main]
//! Parses arbitrary bytes as a store's `catalog.json` (what a node reads from a store it
//! cannot trust more than the network): must never panic; whatever is accepted obeys the
//! rules, re-serializes to a catalog that parses to the same value; every refusal names the
//! catalog and a place. An index head, when given, is within its index and has a digest (a
//! node fetches exactly that many bytes of the index and checks them against it).

use addonfs::addon::catalog::{Catalog, CATALOG_KEY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Catalog::parse(data) {
        Ok(catalog) => {
            assert!(catalog.check().is_ok());
            for entry in &catalog.addons {
                if let Some(head) = &entry.index_head {
                    assert!(head.size >= 1 && head.size <= entry.index_size);
                    assert_eq!(head.sha256.len(), 64);
                    assert!(head.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                }
                for key in entry.objects.keys() {
                    assert!(key.starts_with(&format!("addons/{}/", entry.record.identifier)));
                    assert!(!key.split('/').any(|p| p == ".." || p == "." || p.is_empty()));
                }
            }
            let again = Catalog::parse(&catalog.to_bytes()).expect("a written catalog parses");
            assert_eq!(again, catalog);
        }
        Err(e) => {
            assert!(e.to_string().starts_with(&format!("{CATALOG_KEY}: ")));
            assert!(!e.at.is_empty() && !e.rule.is_empty());
        }
    }
});
