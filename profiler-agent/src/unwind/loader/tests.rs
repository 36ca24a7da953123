use super::*;
use crate::process::ProcessTable;

#[test]
fn tables_of_files_no_process_maps_are_kept_for_the_next_process_that_does() {
    let cache = tempfile::tempdir().unwrap();
    let mut loader = TableLoader::new(
        &LoaderOptions::foreground(cache.path().to_path_buf()),
        crate::bpf::HOST_ARCH,
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

#[test]
fn bias_from_the_segment_holding_the_offset() {
    // A PIE: text at file offset 0x1040, vaddr 0x1040, mapped at 0x5555_5555_5000 from
    // offset 0x1000.
    let segments = [(0x1040, 0x1040, 0x2000)];
    assert_eq!(
        load_bias(&segments, 0x5555_5555_5000, 0x1000),
        Some(0x5555_5555_4000)
    );
    // A non-PIE: vaddr 0x401000 at offset 0x1000, mapped where it says.
    let segments = [(0x1000, 0x40_1000, 0x2000)];
    assert_eq!(load_bias(&segments, 0x40_1000, 0x1000), Some(0));
    assert_eq!(load_bias(&segments, 0x40_1000, 0x9000), None);
}
