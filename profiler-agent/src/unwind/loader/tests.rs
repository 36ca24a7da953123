use super::*;
use crate::process::ProcessTable;

#[test]
fn tables_of_files_no_process_maps_are_kept_for_the_next_process_that_does() {
    let cache = tempfile::tempdir().unwrap();
    let mut loader = TableLoader::new(
        &LoaderOptions::foreground(cache.path().to_path_buf()),
        crate::collect::bpf::HOST_ARCH,
    )
    .unwrap();
    let mut maps = InMemoryMaps::default();
    let me = Pid(std::process::id());
    let mut processes = ProcessTable::default();
    processes.refresh(me).unwrap();
    let info = processes.get(me).unwrap().clone();
    loader.update(&mut maps, &info);
    let loaded = loader.stats().tables_loaded;
    assert!(
        loaded >= 2,
        "this test binary and libc: {:?}",
        loader.stats()
    );
    let pages = maps.pages.len();

    // The process goes, and with it the last mapping of its files.
    loader.forget(&mut maps, &[me]);
    let objects: Vec<Arc<ObjectFile>> = info
        .mappings
        .iter()
        .filter_map(|m| m.object.clone())
        .collect();
    loader.forget_objects(&mut maps, &objects);
    assert_eq!(
        maps.pages.len(),
        pages,
        "orphaned tables stay in the kernel"
    );
    assert!(maps.processes.is_empty());

    // The same files mapped again: taken back, nothing written.
    loader.update(&mut maps, &info);
    let stats = loader.stats();
    assert_eq!(stats.tables_loaded, loaded, "{stats:?}");
    assert_eq!(stats.tables_reused, loaded, "{stats:?}");
    assert_eq!(maps.pages.len(), pages);
    assert!(maps.processes.contains_key(&me));

    // Orphans give their space back when it is needed.
    loader.forget(&mut maps, &[me]);
    loader.forget_objects(&mut maps, &objects);
    while loader.evict_one(&mut maps) {}
    assert!(maps.pages.is_empty());
    assert_eq!(loader.stats().chunks_in_use, 0);
}
