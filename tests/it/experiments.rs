//! Every shipped experiment file validates (offline: hub models are checked against known shapes).

#[test]
fn every_experiment_file_validates() {
    let dir = crate::common::repo().join("experiments");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            if let Err(inv) = lantern::experiment::load(&p) {
                panic!("{inv}");
            }
            n += 1;
        }
    }
    assert!(n >= 1);
}
