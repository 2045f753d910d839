//! The golden digests do not depend on the environment: the tree is created
//! in reverse order under umask 077, with TZ and LC_ALL set to unusual
//! values, SOURCE_DATE_EPOCH read through `LayerOptions::from_env`, and one
//! vs. many compression threads. This file holds ONE test because it changes
//! process-wide state (umask, environment).
#[allow(dead_code)] // this binary uses a part of the shared support
mod layer_support;

use layer_support::{golden_layer, GOLDEN_DIFF_ID, GOLDEN_DIGEST};
use stagex::layer::LayerOptions;

#[test]
fn golden_digests_ignore_umask_tz_locale_order_and_threads() {
    unsafe {
        libc::umask(0o077);
    }
    std::env::set_var("TZ", "Asia/Tokyo");
    std::env::set_var("LC_ALL", "tr_TR.UTF-8");
    std::env::set_var("SOURCE_DATE_EPOCH", "1");
    let options = LayerOptions::from_env().unwrap();
    assert_eq!(options, LayerOptions::default());
    for workers in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let options = LayerOptions {
            workers,
            ..options.clone()
        };
        let (written, _) = golden_layer(dir.path(), true, &options);
        assert_eq!(
            written.diff_id.to_string(),
            GOLDEN_DIFF_ID,
            "{workers} workers"
        );
        assert_eq!(
            written.digest.to_string(),
            GOLDEN_DIGEST,
            "{workers} workers"
        );
    }
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let dir = tempfile::tempdir().unwrap();
    let (later, _) = golden_layer(dir.path(), true, &LayerOptions::from_env().unwrap());
    assert_ne!(later.diff_id.to_string(), GOLDEN_DIFF_ID);
}
