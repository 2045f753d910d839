//! `stagex pallet` checks every pinned input against the maintainers'
//! quorum before writing anything: inputs signed by enough distinct trusted
//! keys compose; one short of the quorum fails naming it; `--no-verify`
//! composes anyway.
use crate::pallet_support;
use crate::sign_support;

use pallet_support::*;
use stagex::lookaside::file::FileLookaside;
use stagex::oci::config::RunConfig;

#[test]
fn inputs_must_meet_the_signature_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = write_package(
        &out,
        "core-a",
        &[package_layer("core-a")],
        RunConfig::default(),
    );
    let b = write_package(
        &out,
        "core-b",
        &[package_layer("core-b")],
        RunConfig::default(),
    );
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    let keys = tmp.path().join("keys");
    sign_support::write_keys(&keys, &[&alice, &bob]);
    let sigs = tmp.path().join("sigs");
    let lookaside = FileLookaside::new(&sigs);
    for (package, signers) in [(&a, vec![&alice, &bob]), (&b, vec![&alice])] {
        let digest = &package.manifest.digest;
        let payload = sign_support::payload(&format!("stagex/{}:latest", package.name), digest);
        for signer in signers {
            let blob = sign_support::sign_raw(signer, &payload, None, false, false);
            lookaside
                .add(&format!("stagex/{}", package.name), digest, &blob)
                .unwrap();
        }
    }
    let store = tmp.path().join("store");
    let src = out.to_str().unwrap();
    let flags = [
        "--keys",
        keys.to_str().unwrap(),
        "--lookaside",
        sigs.to_str().unwrap(),
        "--threshold",
        "2",
    ];
    let mut args = vec!["core-a", "--source", src];
    args.extend(flags);
    let ok = pallet_json(&store, &args);
    assert_eq!(ok["verification"]["status"], "verified");
    assert_eq!(ok["verification"]["images"][0]["valid_signers"], 2);

    let image = tmp.path().join("img");
    let dest = format!("oci:{}:x", image.display());
    let mut args = vec!["core-a+core-b", "--source", src, "--output", &dest];
    args.extend(flags);
    let stderr = pallet_fails(&store, &args);
    assert!(
        stderr.contains("stagex/core-b@") && stderr.contains("1/2 signers"),
        "{stderr}"
    );
    assert!(!image.exists(), "nothing written when the quorum is missed");

    let forced = pallet_json(
        &store,
        &[
            "core-a+core-b",
            "--source",
            src,
            "--no-verify",
            "--output",
            &dest,
        ],
    );
    assert_eq!(forced["verification"]["status"], "skipped (--no-verify)");
    assert!(image.join("index.json").is_file());
}
