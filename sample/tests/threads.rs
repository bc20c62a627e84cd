//! Same seed ⇒ byte-identical output, whatever the number of threads candle's matmuls use.

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("tiny");
    rlcode_policy::init_checkpoint(rlcode_policy::Preset::Tiny, 3, &ck).unwrap();
    let problems = dir.path().join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\":\"HumanEval/0\",\"prompt\":\"def f(x):\\n    \\\"\\\"\\\" double x \\\"\\\"\\\"\\n\"}\n\
         {\"id\":\"q\",\"prompt\":\"import math\\n\\ndef g(\"}\n",
    )
    .unwrap();
    let run = |threads: &str| {
        let out = rlcode_tests::run_exe_env(
            env!("CARGO_BIN_EXE_rl-sample"),
            &[
                "--model",
                ck.to_str().unwrap(),
                "--problems",
                problems.to_str().unwrap(),
                "-n",
                "4",
                "--seed",
                "11",
                "--max-tokens",
                "24",
                "--top-p",
                "0.95",
            ],
            "",
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("rl-sample: 8 samples, "), "{stderr}");
        out.stdout
    };
    let one = run("1");
    let two = run("2");
    assert_eq!(String::from_utf8(one.clone()).unwrap().lines().count(), 8);
    assert!(one == two, "outputs differ between 1 and 2 threads");
}
