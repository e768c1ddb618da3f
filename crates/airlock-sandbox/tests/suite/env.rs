use airlock_sandbox::{scrub_env, ExitKind};

use crate::common::*;

sandbox_test! {
    fn only_the_scrubbed_environment_arrives() {
        let host = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "env-canary-1".to_string()),
            ("GITHUB_TOKEN".to_string(), "env-canary-2".to_string()),
            ("LD_PRELOAD".to_string(), "/x/env-canary-3.so".to_string()),
            ("NAMED_TOKEN".to_string(), "passed-on-purpose".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        let f = Fixture::new();
        let mut s = f.sh("env");
        s.env = scrub_env(host, &["NAMED_TOKEN".into(), "LD_LIBRARY_PATH=/evil".into()]);
        let Some(o) = try_run(&s) else { return };
        assert_eq!(o.status, ExitKind::Exited(0));
        let out = stdout(&o);
        assert!(!out.contains("env-canary"), "{out}");
        assert!(!out.contains("LD_"), "{out}");
        assert!(out.contains("NAMED_TOKEN=passed-on-purpose"), "{out}");
        assert!(out.contains("LANG=C.UTF-8"), "{out}");
    }
}
