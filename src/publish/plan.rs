//! Owns: `--dry-run`. Asks the registries (HEAD and GET only, never a
//! write) what a publish would do: per destination the blobs to upload,
//! mount or skip, the manifests and the tags to push, reported in the same
//! shape as a real run (`dry_run: true` in the report).
//!
//! Must not: send anything but reads; it shares the journal for reading.
use super::push::{call, for_each_pair, served_digest, Run};
use super::report::{Counters, RegistryReport};

/// The plan of every destination.
pub fn plan(run: &Run<'_>, jobs: usize) -> Vec<RegistryReport> {
    for_each_pair(run, jobs, |clients, d, i| {
        let counters = &run.counters[d];
        Counters::add(&counters.images, 1);
        let image = &run.images[i];
        if run.journaled(&run.destinations[d], i) {
            Counters::add(&counters.images_journaled, 1);
            return;
        }
        let result = clients
            .get(&run.destinations[d].host)
            .and_then(|client| plan_image(run, &client, d, i));
        if let Err(error) = result {
            counters.fail(&image.name, error);
        }
    });
    run.destinations
        .iter()
        .zip(&run.counters)
        .map(|(d, c)| c.report(&d.to_string(), run.host(d).budget.retries()))
        .collect()
}

fn plan_image(
    run: &Run<'_>,
    client: &crate::registry::RegistryClient,
    d: usize,
    i: usize,
) -> Result<(), String> {
    let dest = &run.destinations[d];
    let (image, counters, host) = (&run.images[i], &run.counters[d], run.host(dest));
    let repo = dest.repository(&image.name);
    let mut all_there = true;
    for blob in &image.blobs {
        let there = !call(host, || client.needs_blob(&repo, &blob.digest))?;
        all_there &= there;
        if there {
            Counters::add(&counters.blobs_skipped, 1);
            host.holders.add(&blob.digest, &repo);
        } else if host.holders.known(&blob.digest).iter().any(|r| r != &repo) {
            Counters::add(&counters.blobs_mounted, 1);
            Counters::add(&counters.bytes_mounted, blob.size);
        } else {
            Counters::add(&counters.blobs_uploaded, 1);
            Counters::add(&counters.bytes_uploaded, blob.size);
            // Planned: later repositories of this host would mount it.
            host.holders.add(&blob.digest, &repo);
        }
    }
    let present = run.tags[i]
        .iter()
        .filter(|tag| {
            all_there
                && served_digest(client, host, &repo, tag)
                    .is_ok_and(|d| d.as_ref() == Some(&image.root.digest))
        })
        .count() as u64;
    let tags = run.tags[i].len() as u64;
    Counters::add(&counters.tags_present, present);
    Counters::add(&counters.tags_pushed, tags - present);
    if present < tags {
        Counters::add(
            &counters.manifests_pushed,
            image.manifests.len().saturating_sub(1) as u64,
        );
    }
    Ok(())
}
