//! Proves the peer harness itself: a real registry starts and answers.
use crate::peers;

use peers::registry::{http_status, Registry};

#[test]
fn registry_starts_and_answers_v2() {
    let Some(reg) = Registry::start() else { return };
    assert_eq!(http_status(reg.port, "/v2/"), Some(200));
    assert_eq!(http_status(reg.port, "/v2/nope/manifests/x"), Some(404));
}
