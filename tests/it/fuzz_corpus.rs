//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same entry points
//! the fuzz targets call, so every input a fuzzer ever kept — including the ones that once
//! found a bug — stays a regression test, and the targets' code cannot rot between fuzz runs.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            panic!("{} fails: {panic:?}", path.display());
        }
        inputs += 1;
    }
    assert!(inputs > 0, "the {target} corpus is empty");
}

#[test]
fn the_fuzz_corpora_still_pass() {
    use sallyport::fuzzing;
    replay("cookie", fuzzing::cookie);
    replay("envelope", fuzzing::envelope);
    replay("route", fuzzing::route);
    replay("config", fuzzing::config);
    replay("jwt", fuzzing::jwt);
    replay("id_token_claims", fuzzing::id_token_claims);
    replay("return_to", fuzzing::return_to);
}
