//! The store on its backends: a local directory and a real Garage S3 server (started by the
//! tests; under `CI` a missing `garage` is a failure).

mod common;

use addonfs::addon::backend;
use common::garage::Garage;
use object_store::ObjectStoreExt;

#[test]
fn garage_harness_starts_stops_and_resumes() {
    let Some(mut garage) = Garage::start() else { return };
    let b = backend::open_with(&garage.url("p"), &garage.options()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(b.store().put(&b.key("x"), "hello".into())).unwrap();
    garage.stop();
    assert!(rt.block_on(b.store().get(&b.key("x"))).is_err(), "a stopped Garage answers");
    garage.resume();
    let got = rt.block_on(async { b.store().get(&b.key("x")).await?.bytes().await }).unwrap();
    assert_eq!(&got[..], b"hello");
}
