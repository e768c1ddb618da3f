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

sandbox_test! {
    fn runs_over_one_workspace_overlap_without_closing_each_others_overlay() {
        // Runs over the same workspace share its staging area (an MCP
        // proxy starting two sandboxed servers in one project does this).
        // One run ending, or one starting, must not close the overlay of
        // another that is still running; the last to end closes it.
        let f = Fixture::new();
        let work = f.path().join("work");
        let results: Vec<Option<(ExitKind, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let f = &f;
                    s.spawn(move || {
                        std::thread::sleep(std::time::Duration::from_millis(20 * i));
                        // Each writes (a copy-up through the shared work
                        // dir) after the others have started or ended.
                        let script = format!("sleep 0.{}; echo {i} > out-{i}; cat out-{i}", 1 + i % 3);
                        try_run(&f.sh(&script)).map(|o| (o.status, stdout(&o)))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, r) in results.iter().enumerate() {
            let Some((status, out)) = r else { return };
            assert_eq!(*status, ExitKind::Exited(0), "run {i}: {out}");
            assert_eq!(out.trim(), i.to_string(), "run {i}");
            assert_eq!(std::fs::read_to_string(f.upper().join(format!("out-{i}"))).unwrap(), format!("{i}\n"));
        }
        // All ended: the overlay is closed (no marker where the kernel and
        // the next run look for one).
        assert!(!work.join("work").exists(), "marker left open");
        let o = try_run(&f.sh("cat out-0 out-3")).unwrap();
        assert_eq!(o.status, ExitKind::Exited(0), "{}", stderr(&o));
        assert!(!work.join("work").exists());
    }
}
