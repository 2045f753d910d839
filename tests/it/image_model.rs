//! Every `ImageSource`/`ImageSink` pair round-trips an image byte for byte
//! (the manifest digest never changes), with no network: layout ->
//! oci-archive -> layout, layout -> docker-archive, store <-> layout,
//! out/ -> layout. The registry pair is covered by tests/pallet_registry.rs
//! and tests/image_peers.rs against a real registry.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::pallet_support;
use pallet_support::write_image;

use stagex::build::image_out::Staging;
use stagex::image::output::{self, Destination};
use stagex::image::{fetch_image, platform_manifest, Image, ImageSource, OutDir};
use stagex::layer::{write_layer_to_layout, FileSource, FileTree, LayerOptions, TreeEntry};
use stagex::oci::config::{History, RunConfig};
use stagex::oci::image::{build_index, ImageLayer, ImageSpec};
use stagex::oci::layout::Layout;
use stagex::oci::{media_type, Descriptor, Digest, Platform};
use stagex::progress::NoProgress;
use stagex::store::Store;

fn platform(text: &str) -> Platform {
    text.parse().unwrap()
}

/// One image spec per platform over two layers written into `layout`.
fn specs(layout: &Layout, platforms: &[&str]) -> Vec<ImageSpec> {
    let layers: Vec<ImageLayer> = ["etc/a", "usr/bin/b"]
        .iter()
        .map(|path| {
            let mut tree = FileTree::new();
            tree.insert(
                path,
                TreeEntry::file(FileSource::Bytes(path.as_bytes().to_vec()), 0o644),
            )
            .unwrap();
            let written = write_layer_to_layout(&tree, &LayerOptions::default(), layout).unwrap();
            ImageLayer {
                descriptor: written.descriptor(),
                diff_id: written.diff_id,
                history: History {
                    created_by: Some(format!("test {path}")),
                    ..History::default()
                },
            }
        })
        .collect();
    platforms
        .iter()
        .map(|p| ImageSpec {
            platform: platform(p),
            created: "1970-01-01T00:00:01Z".into(),
            run: RunConfig::default(),
            layers: layers.clone(),
            empty_history: vec![],
            annotations: BTreeMap::new(),
        })
        .collect()
}

/// A layout holding a two-platform image index tagged `demo:1`; returns
/// the index descriptor and the per-platform manifests.
fn source_layout(dir: &Path) -> (Layout, Descriptor, Vec<Descriptor>) {
    let layout = Layout::create(dir).unwrap();
    let manifests: Vec<Descriptor> = specs(&layout, &["linux/amd64", "linux/arm64"])
        .into_iter()
        .map(|spec| write_image(&layout, spec.platform, spec.run, spec.layers))
        .collect();
    let index = build_index(&manifests, BTreeMap::new()).unwrap();
    let root = layout.write_json(&index, media_type::OCI_INDEX).unwrap();
    layout.set_ref(Some("demo:1"), root.clone()).unwrap();
    (layout, root, manifests)
}

fn untar(file: &Path, into: &Path) {
    tar::Archive::new(File::open(file).unwrap())
        .unpack(into)
        .unwrap();
}

/// Loads the `platform` image of `root` from `layout`, checked.
fn image_of(layout: &Layout, root: &Descriptor, platform: &str) -> Image {
    let (descriptor, _, _) = layout
        .image_for_platform(root, Some(&self::platform(platform)))
        .unwrap();
    Image::load(layout, &descriptor).unwrap()
}

#[test]
fn layout_to_oci_archive_to_layout_keeps_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (source, root, manifests) = source_layout(&dir.path().join("src"));
    let archive = dir.path().join("out/demo.tar");
    let destination = Destination::parse(&format!("oci-archive:{}:v1", archive.display())).unwrap();
    let report = output::write(&destination, &source, &root, None, &NoProgress).unwrap();
    assert_eq!(report.digest.as_ref(), Some(&root.digest));
    // index + 2 manifests + 2 configs + 2 shared layers.
    assert_eq!(report.blobs_written, 7);
    assert_eq!(
        report.bytes_written,
        std::fs::metadata(&archive).unwrap().len()
    );

    untar(&archive, &dir.path().join("back"));
    let back = Layout::open(dir.path().join("back")).unwrap();
    let found = back.resolve(Some("v1")).unwrap();
    assert_eq!(found.digest, root.digest);
    assert_eq!(
        back.read_blob(&root.digest).unwrap(),
        source.read_blob(&root.digest).unwrap()
    );
    for (manifest, p) in manifests.iter().zip(["linux/amd64", "linux/arm64"]) {
        let image = image_of(&back, &found, p);
        assert_eq!(image.digest(), &manifest.digest, "{p}");
        for layer in image.layers() {
            assert_eq!(
                back.read_blob(&layer.digest).unwrap(),
                source.read_blob(&layer.digest).unwrap()
            );
        }
    }
}

#[test]
fn layout_to_docker_archive_holds_the_config_and_diff_id_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (source, root, _) = source_layout(&dir.path().join("src"));
    let archive = dir.path().join("demo-docker.tar");
    let destination =
        Destination::parse(&format!("docker-archive:{}:me/demo:1", archive.display())).unwrap();
    output::write(
        &destination,
        &source,
        &root,
        Some(&platform("linux/arm64")),
        &NoProgress,
    )
    .unwrap();
    untar(&archive, &dir.path().join("unpacked"));
    let unpacked = dir.path().join("unpacked");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "me/demo:1");
    let image = image_of(&source, &root, "linux/arm64");
    // The config is the arm64 one, byte for byte.
    let config = std::fs::read(unpacked.join(manifest[0]["Config"].as_str().unwrap())).unwrap();
    assert_eq!(config, image.config_blob().bytes);
    // Every layer is stored uncompressed, named by (and hashing to) its diff_id.
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.diff_ids().len());
    for (path, diff_id) in layers.iter().zip(image.diff_ids()) {
        let mut bytes = Vec::new();
        File::open(unpacked.join(path.as_str().unwrap()))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(&Digest::of_bytes(&bytes), diff_id);
    }
}

#[test]
fn store_to_layout_and_back_through_sources_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let (_, root, manifests) = source_layout(store.root());
    // store -> layout (oci: sink).
    let target = dir.path().join("copy");
    let destination = Destination::parse(&format!("oci:{}:2", target.display())).unwrap();
    let report = output::write(&destination, store.layout(), &root, None, &NoProgress).unwrap();
    assert_eq!((report.blobs_written, report.blobs_existing), (7, 0));
    let again = output::write(&destination, store.layout(), &root, None, &NoProgress).unwrap();
    assert_eq!((again.blobs_written, again.blobs_existing), (0, 7));
    // layout -> a fresh store, through the layout as an ImageSource.
    let copy = Layout::open(&target).unwrap();
    assert_eq!(copy.resolve(Some("2")).unwrap().digest, root.digest);
    // A layout holding several images names them `name:tag`.
    copy.set_ref(Some("demo:2"), root.clone()).unwrap();
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let (top, bytes) = copy.resolve_tag("demo", Some("2")).unwrap();
    assert_eq!(top, root.digest);
    fresh.layout().write_blob(&bytes).unwrap();
    let arm64 = platform("linux/arm64");
    let image = fetch_image(&copy, "demo", &top, &arm64, fresh.layout(), &NoProgress).unwrap();
    // What platform_manifest picked under the index is arm64's manifest.
    let (index, manifest, _) =
        platform_manifest(&copy, "demo", &top, &arm64, fresh.layout()).unwrap();
    assert_eq!(
        (index, &manifest.digest),
        (Some(root.digest.clone()), image.digest())
    );
    for layer in image.layers() {
        assert!(fresh.layout().has_blob(&layer.digest));
    }
    assert_eq!(image.digest(), &manifests[1].digest);
    assert_eq!(image.platform(), platform("linux/arm64"));
    // The store is a source too: the digest pin reads back the same bytes.
    assert_eq!(
        ImageSource::manifest(&fresh, "demo", &manifest.digest).unwrap(),
        image.manifest_blob().bytes
    );
}

#[test]
fn out_dir_to_layout_keeps_the_digests_files_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out_root = dir.path().join("out");
    let staging = Staging::new(&out_root, "core-demo").unwrap();
    let images = specs(staging.layout(), &["linux/amd64", "linux/arm64"]);
    let built = staging
        .finish(
            &images,
            "1.2.3",
            "1970-01-01T00:00:01Z",
            &out_root.join("core-demo"),
        )
        .unwrap();
    // A staging leftover is not an image.
    std::fs::create_dir_all(out_root.join(".core-other.tmp")).unwrap();
    let out = OutDir::open(&out_root);
    assert_eq!(out.images().unwrap(), vec!["core-demo".to_string()]);
    assert!(out.is_built("core-demo") && !out.is_built("core-other"));
    let arm = out
        .manifest_digest("core-demo", &platform("linux/arm64"))
        .unwrap();
    assert_eq!(arm.digest, built.manifests[1].digest);
    let listed = out.manifests("core-demo").unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.version.as_deref() == Some("1.2.3")));
    let image = out.image("core-demo", &platform("linux/arm64")).unwrap();
    assert_eq!(image.digest(), &arm.digest);

    // out/ -> layout, then read back through the layout.
    let top = out.top("core-demo").unwrap();
    let target = dir.path().join("exported");
    let destination = Destination::parse(&format!("oci:{}:1.2.3", target.display())).unwrap();
    output::write(
        &destination,
        &out.layout("core-demo").unwrap(),
        &top,
        None,
        &NoProgress,
    )
    .unwrap();
    let exported = Layout::open(&target).unwrap();
    let root = exported.resolve(Some("1.2.3")).unwrap();
    assert_eq!(root.digest, built.index.digest);
    assert_eq!(
        image_of(&exported, &root, "linux/arm64").digest(),
        &arm.digest
    );
    // out/ as an ImageSource: the name resolves to the same index.
    let (digest, _) = out.resolve_tag("core-demo", None).unwrap();
    assert_eq!(digest, built.index.digest);
    assert!(out.resolve_tag("core-missing", None).is_err());
}
