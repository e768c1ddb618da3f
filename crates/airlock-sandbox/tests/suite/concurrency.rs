use airlock_sandbox::ExitKind;

use crate::common::*;

sandbox_test! {
    fn many_threads_spawn_at_once() {
        // The broker starts sandboxes from a multi-threaded runtime: the
        // pre-exec child must not touch locks another thread may hold (it
        // once blocked forever in glibc's set*id). Several threads, each
        // with its own workspace, run sandboxes at the same time while the
        // others allocate.
        let fixtures: Vec<Fixture> = (0..6).map(|_| Fixture::new()).collect();
        let results: Vec<Vec<ExitKind>> = std::thread::scope(|s| {
            let handles: Vec<_> = fixtures
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    s.spawn(move || {
                        (0..4)
                            .map(|j| {
                                let junk: Vec<Vec<u8>> = (0..64).map(|k| vec![k as u8; 4096]).collect();
                                let o = try_run(&f.sh(&format!("echo {i}-{j} > out-{j}; exit {j}")));
                                drop(junk);
                                o.map(|o| o.status).unwrap_or(ExitKind::Exited(j))
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r, &(0..4).map(ExitKind::Exited).collect::<Vec<_>>(), "thread {i}");
        }
        for (i, f) in fixtures.iter().enumerate() {
            if f.upper().join("out-3").exists() {
                assert_eq!(std::fs::read_to_string(f.upper().join("out-3")).unwrap(), format!("{i}-3\n"));
            }
        }
    }
}
