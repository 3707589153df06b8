use clap::{CommandFactory, Parser};
use proptest::prelude::*;

use super::*;
use crate::tls::ClientCertReqs;
use crate::{ProcessCli, ProcessCommand};

fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
    let argv = ["candela", "serve"].iter().chain(args).copied();
    ProcessCli::try_parse_from(argv).map(|cli| match cli.command {
        ProcessCommand::Serve(s) => s,
        other => panic!("parsed `serve` as {other:?}"),
    })
}

#[test]
fn clap_definition_is_consistent() {
    ProcessCli::command().debug_assert();
}

#[test]
fn defaults_match_vllm() {
    let a = serve(&[]).unwrap();
    assert_eq!(a.server.port, 8000);
    assert_eq!(a.server.grpc_port, 50051);
    assert_eq!(a.cache.block_size, 16);
    assert_eq!(a.cache.gpu_memory_utilization, 0.9);
    assert!(a.cache.enable_prefix_caching());
    assert!(a.scheduler.enable_chunked_prefill());
    assert_eq!(a.scheduler.scheduling_policy, SchedulingPolicy::Fcfs);
    assert_eq!(a.scheduler.max_waiting, 1024);
    assert_eq!(a.log.log_stats_interval, 10.0);
    assert_eq!(a.model.device, Device::Cpu);
    assert_eq!(a.model.tensor_parallel_size, 1);
    assert_eq!(a.model_value(), None);
    assert!(a.validate().is_ok());
}

#[test]
fn every_flag_parses() {
    let a = serve(&[
        "--model",
        "hf://org/name:Q4_K_M",
        "--revision",
        "v1",
        "--download-dir",
        "/cache",
        "--hf-token",
        "hf_x",
        "--gguf-file",
        "m.gguf",
        "--served-model-name",
        "a",
        "b",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--grpc-port",
        "9001",
        "--api-key",
        "k",
        "--device",
        "cuda:1",
        "--dtype",
        "f32",
        "--tensor-parallel-size",
        "1",
        "--threads",
        "2",
        "--max-model-len",
        "4096",
        "--max-num-seqs",
        "8",
        "--max-num-seqs-per-tier",
        "flex=4,default=16",
        "--max-num-seqs-per-tier",
        "priority=2",
        "--api-key-tiers",
        "/secrets/tiers",
        "--max-num-batched-tokens",
        "512",
        "--block-size",
        "32",
        "--gpu-memory-utilization",
        "0.5",
        "--kv-cache-memory",
        "512MiB",
        "--swap-space",
        "2",
        "--no-enable-prefix-caching",
        "--no-enable-chunked-prefill",
        "--scheduler-delay-factor",
        "0.5",
        "--scheduling-policy",
        "priority",
        "--max-waiting",
        "7",
        "--kv-cache-dtype",
        "auto",
        "--enforce-eager",
        "--disable-log-stats",
        "--log-stats-interval",
        "2.5",
        "--profiler-dir",
        "/tmp/p",
    ])
    .unwrap();
    assert_eq!(a.model_value(), Some("hf://org/name:Q4_K_M"));
    assert_eq!(a.hub.revision.as_deref(), Some("v1"));
    assert_eq!(a.hub.download_dir, Some(PathBuf::from("/cache")));
    assert_eq!(a.hub.hf_token.as_deref(), Some("hf_x"));
    assert_eq!(a.hub.gguf_file.as_deref(), Some("m.gguf"));
    assert_eq!(a.server.served_model_name, vec!["a", "b"]);
    assert_eq!(a.server.api_key.as_deref(), Some("k"));
    assert_eq!(
        a.server.api_key_tiers,
        Some(PathBuf::from("/secrets/tiers"))
    );
    assert_eq!(
        a.scheduler
            .max_num_seqs_per_tier
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["flex=4", "default=16", "priority=2"]
    );
    assert_eq!(a.model.device, Device::Cuda(1));
    assert_eq!(a.model.dtype, Dtype::F32);
    assert_eq!(a.model.threads, Some(2));
    assert_eq!(a.scheduler.max_model_len, Some(4096));
    assert_eq!(a.cache.kv_cache_memory, Some(ByteSize(512 << 20)));
    assert!(!a.cache.enable_prefix_caching());
    assert!(!a.scheduler.enable_chunked_prefill());
    assert_eq!(a.scheduler.scheduling_policy, SchedulingPolicy::Priority);
    assert!(a.log.enforce_eager && a.log.disable_log_stats);
    assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/p")));
    assert!(a.validate().is_ok());
}

#[test]
fn boolean_flags_take_both_spellings_last_wins() {
    let a = serve(&["--enable-prefix-caching"]).unwrap();
    assert!(a.cache.enable_prefix_caching());
    let a = serve(&["--enable-prefix-caching=false"]).unwrap();
    assert!(!a.cache.enable_prefix_caching());
    let a = serve(&["--no-enable-prefix-caching", "--enable-prefix-caching"]).unwrap();
    assert!(a.cache.enable_prefix_caching());
    let a = serve(&["--enable-chunked-prefill", "--no-enable-chunked-prefill"]).unwrap();
    assert!(!a.scheduler.enable_chunked_prefill());
}

#[test]
fn positional_model_like_vllm_serve() {
    let a = serve(&["/models/x.gguf"]).unwrap();
    assert_eq!(a.model_value(), Some("/models/x.gguf"));
    assert!(serve(&["/a.gguf", "--model", "/b.gguf"]).is_err());
}

#[test]
fn bad_values_fail_parsing_or_validation() {
    assert!(serve(&["--port", "70000"]).is_err());
    assert!(serve(&["--device", "tpu"]).is_err());
    assert!(serve(&["--dtype", "int3"]).is_err());
    assert!(serve(&["--scheduling-policy", "lifo"]).is_err());
    assert!(serve(&["--kv-cache-memory", "lots"]).is_err());
    assert!(serve(&["--max-num-seqs", "-1"]).is_err());
    assert!(serve(&["--threads", "0"]).is_err());
    for bad in ["flex", "flex=0", "batch=2", "auto=1"] {
        let e = serve(&["--max-num-seqs-per-tier", bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-num-seqs-per-tier"), "{bad}: {e}");
    }
    let e = serve(&["--max-num-seqs-per-tier", "flex=2,flex=3"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e, "--max-num-seqs-per-tier: flex is capped twice");
    for (flag, value) in [
        ("--tensor-parallel-size", "2"),
        ("--dtype", "bf16"),
        ("--dtype", "f16"),
        ("--kv-cache-dtype", "fp8"),
        ("--block-size", "12"),
        ("--gpu-memory-utilization", "1.5"),
        ("--max-num-seqs", "0"),
        ("--max-model-len", "0"),
        ("--max-num-batched-tokens", "0"),
        ("--swap-space=-1", ""),
        ("--scheduler-delay-factor=-1", ""),
        ("--log-stats-interval", "0"),
        ("--kv-cache-memory", "0"),
        ("--served-model-name", " "),
    ] {
        let args: Vec<&str> = [flag, value]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let e = serve(&args).unwrap().validate().unwrap_err();
        let name = flag.split('=').next().unwrap();
        assert!(e.contains(name) && !e.contains('\n'), "{flag}: {e}");
    }
    let e = serve(&["--model", "hf://nothing"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.contains("hf://nothing"), "{e}");
}

#[test]
fn profiler_dir_falls_back_to_vllm_env() {
    // SAFETY: no other test of this crate reads or writes this variable.
    unsafe { std::env::set_var(env::VLLM_PROFILER_DIR, "/tmp/vllm-prof") };
    let a = serve(&[]).unwrap();
    assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/vllm-prof")));
    let a = serve(&["--profiler-dir", "/tmp/mine"]).unwrap();
    assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/mine")));
}

/// Every flag constant names a real `serve` flag.
#[test]
fn flag_constants_are_serve_flags() {
    let cmd = ProcessCli::command();
    let serve = cmd.find_subcommand("serve").unwrap();
    let longs: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
    for name in [
        flag::MODEL,
        flag::REVISION,
        flag::DOWNLOAD_DIR,
        flag::HF_TOKEN,
        flag::GGUF_FILE,
        flag::SERVED_MODEL_NAME,
        flag::HOST,
        flag::PORT,
        flag::GRPC_PORT,
        flag::API_KEY,
        flag::API_KEY_TIERS,
        flag::DEVICE,
        flag::DTYPE,
        flag::TENSOR_PARALLEL_SIZE,
        flag::THREADS,
        flag::BLOCK_SIZE,
        flag::GPU_MEMORY_UTILIZATION,
        flag::KV_CACHE_MEMORY,
        flag::SWAP_SPACE,
        flag::ENABLE_PREFIX_CACHING,
        flag::KV_CACHE_DTYPE,
        flag::MAX_MODEL_LEN,
        flag::MAX_NUM_SEQS,
        flag::MAX_NUM_SEQS_PER_TIER,
        flag::MAX_NUM_BATCHED_TOKENS,
        flag::ENABLE_CHUNKED_PREFILL,
        flag::SCHEDULER_DELAY_FACTOR,
        flag::SCHEDULING_POLICY,
        flag::MAX_WAITING,
        flag::DISABLE_LOG_STATS,
        flag::LOG_STATS_INTERVAL,
        flag::ENFORCE_EAGER,
        flag::PROFILER_DIR,
        flag::SPECULATIVE_CONFIG,
        flag::ENABLE_LORA,
        flag::LORA_MODULES,
        flag::MAX_LORAS,
        flag::MAX_LORA_RANK,
        flag::MAX_CPU_LORAS,
    ] {
        assert!(longs.contains(&name), "--{name} is not a serve flag");
    }
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn flags() -> impl Strategy<Value = ServeFlags> {
    let model = prop_oneof![
        Just("/models/m.gguf".to_owned()),
        "[a-z]{1,8}/[A-Za-z0-9]{1,12}(:Q[0-9]_K_M)?".prop_map(|r| format!("hf://{r}")),
    ];
    let first = (
        model,
        opt("[a-z0-9.]{1,12}"),
        opt("[a-z0-9/-]{1,20}"),
        opt(Just("0.0.0.0".to_owned())),
        opt(1u16..),
        opt(1u16..),
        opt(prop_oneof![
            Just(Device::Cpu),
            (0usize..8).prop_map(Device::Cuda)
        ]),
        opt(prop_oneof![Just(Dtype::Auto), Just(Dtype::F32)]),
        opt(1usize..1 << 20),
        opt(1usize..4096),
    );
    let second = (
        opt(1usize..1 << 20),
        opt((0u32..9).prop_map(|p| 1usize << p)),
        opt((1u32..=100).prop_map(|p| f64::from(p) / 100.0)),
        opt((1u64..1 << 40).prop_map(ByteSize)),
        opt(0.0f64..64.0),
        opt(Just(KvCacheDtype::Auto)),
        opt(0.0f64..4.0),
        opt(prop_oneof![
            Just(SchedulingPolicy::Fcfs),
            Just(SchedulingPolicy::Priority)
        ]),
        opt(any::<bool>()),
        opt(any::<bool>()),
    );
    let lora = (
        any::<bool>(),
        proptest::collection::vec(
            (
                prop_oneof![
                    "/[a-z]{1,8}/[a-z0-9_-]{1,12}",
                    "[a-z]{1,8}/[A-Za-z0-9]{1,12}".prop_map(|r| format!("hf://{r}")),
                ],
                opt("[a-z0-9.-]{1,12}"),
            ),
            0..3,
        ),
        opt(1usize..8),
        opt(proptest::sample::select(&crate::lora::MAX_LORA_RANKS[..])),
        opt(0usize..4),
    );
    let tls = (any::<bool>(), 0u8..3);
    let tiers = (
        proptest::sample::subsequence(crate::tiers::ServiceTier::ALL.to_vec(), 0..=3),
        proptest::collection::vec(1usize..1024, 3),
        opt("/[a-z]{1,8}/[a-z0-9_.-]{1,12}"),
    );
    (first, second, lora, tls, tiers).prop_map(|(a, b, l, t, tiers)| {
        // LoRA runs on the CPU only: the engine refuses it with a GPU device.
        let on = l.0 && matches!(a.6, None | Some(Device::Cpu));
        ServeFlags {
            model: a.0,
            revision: a.1,
            served_model_name: a.2,
            host: a.3,
            port: a.4,
            grpc_port: a.5,
            device: a.6,
            dtype: a.7,
            max_model_len: a.8,
            max_num_seqs: a.9,
            max_num_seqs_per_tier: tiers
                .0
                .into_iter()
                .zip(tiers.1)
                .map(|(tier, max_num_seqs)| TierCap { tier, max_num_seqs })
                .collect(),
            api_key_tiers: tiers.2.map(PathBuf::from),
            max_num_batched_tokens: b.0,
            block_size: b.1,
            gpu_memory_utilization: b.2,
            kv_cache_memory: b.3,
            swap_space: b.4,
            kv_cache_dtype: b.5,
            scheduler_delay_factor: b.6,
            scheduling_policy: b.7,
            enable_prefix_caching: b.8,
            enable_chunked_prefill: b.9,
            enable_lora: on,
            lora_modules: if on {
                l.1.into_iter()
                    .enumerate()
                    .map(|(i, (path, base))| LoraModule {
                        name: format!("adapter-{i}"),
                        path,
                        base_model_name: base,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            max_loras: l.2.filter(|_| on),
            max_lora_rank: l.3.filter(|_| on),
            max_cpu_loras: l
                .4
                .filter(|_| on)
                .map(|extra| l.2.unwrap_or(crate::lora::DEFAULT_MAX_LORAS) + extra),
            tls: if t.0 {
                TlsFlags {
                    keyfile: Some("/tls/tls.key".into()),
                    certfile: Some("/tls/tls.crt".into()),
                    ca_certs: (t.1 > 0).then(|| "/tls/ca.crt".into()),
                    cert_reqs: match t.1 {
                        0 => ClientCertReqs::None,
                        1 => ClientCertReqs::Optional,
                        _ => ClientCertReqs::Required,
                    },
                }
            } else {
                TlsFlags::default()
            },
            extra: Vec::new(),
        }
    })
}

proptest! {
    /// What the operator writes is what the engine reads: every set field comes back from
    /// the parser with the same value, unset ones keep the engine's defaults, and the
    /// validation accepts the result.
    #[test]
    fn serve_flags_round_trip_through_the_parser(f in flags()) {
        let argv = f.to_args();
        let defaults = serve(&[]).unwrap();
        let a = match crate::parse_process_args(&argv) {
            Ok(ProcessCommand::Serve(a)) => a,
            other => return Err(TestCaseError::fail(format!("{argv:?}: {other:?}"))),
        };
        prop_assert_eq!(a.model_value(), Some(f.model.as_str()));
        prop_assert_eq!(&a.hub.revision, &f.revision);
        prop_assert_eq!(a.server.served_model_name.first(), f.served_model_name.as_ref());
        prop_assert_eq!(&a.server.host, f.host.as_ref().unwrap_or(&defaults.server.host));
        prop_assert_eq!(a.server.port, f.port.unwrap_or(defaults.server.port));
        prop_assert_eq!(a.server.grpc_port, f.grpc_port.unwrap_or(defaults.server.grpc_port));
        prop_assert_eq!(a.model.device, f.device.unwrap_or(defaults.model.device));
        prop_assert_eq!(a.model.dtype, f.dtype.unwrap_or(defaults.model.dtype));
        prop_assert_eq!(a.scheduler.max_model_len, f.max_model_len);
        prop_assert_eq!(a.scheduler.max_num_seqs, f.max_num_seqs.unwrap_or(defaults.scheduler.max_num_seqs));
        prop_assert_eq!(&a.scheduler.max_num_seqs_per_tier, &f.max_num_seqs_per_tier);
        prop_assert_eq!(&a.server.api_key_tiers, &f.api_key_tiers);
        prop_assert_eq!(a.scheduler.max_num_batched_tokens, f.max_num_batched_tokens);
        prop_assert_eq!(a.cache.block_size, f.block_size.unwrap_or(defaults.cache.block_size));
        prop_assert_eq!(a.cache.gpu_memory_utilization, f.gpu_memory_utilization.unwrap_or(defaults.cache.gpu_memory_utilization));
        prop_assert_eq!(a.cache.kv_cache_memory, f.kv_cache_memory);
        prop_assert_eq!(a.cache.swap_space, f.swap_space.unwrap_or(defaults.cache.swap_space));
        prop_assert_eq!(a.cache.kv_cache_dtype, f.kv_cache_dtype.unwrap_or(defaults.cache.kv_cache_dtype));
        prop_assert_eq!(a.scheduler.scheduler_delay_factor, f.scheduler_delay_factor.unwrap_or(defaults.scheduler.scheduler_delay_factor));
        prop_assert_eq!(a.scheduler.scheduling_policy, f.scheduling_policy.unwrap_or(defaults.scheduler.scheduling_policy));
        prop_assert_eq!(a.cache.enable_prefix_caching(), f.enable_prefix_caching.unwrap_or(true));
        prop_assert_eq!(a.scheduler.enable_chunked_prefill(), f.enable_chunked_prefill.unwrap_or(true));
        prop_assert_eq!(a.lora.enable_lora, f.enable_lora);
        prop_assert_eq!(&a.lora.lora_modules, &f.lora_modules);
        prop_assert_eq!(a.lora.max_loras, f.max_loras.unwrap_or(defaults.lora.max_loras));
        prop_assert_eq!(a.lora.max_lora_rank, f.max_lora_rank.unwrap_or(defaults.lora.max_lora_rank));
        prop_assert_eq!(a.lora.max_cpu_loras, f.max_cpu_loras);
        prop_assert_eq!(&a.tls.keyfile, &f.tls.keyfile);
        prop_assert_eq!(&a.tls.certfile, &f.tls.certfile);
        prop_assert_eq!(&a.tls.ca_certs, &f.tls.ca_certs);
        prop_assert_eq!(a.tls.client_cert_reqs(), f.tls.cert_reqs);
    }
}

#[test]
fn tool_choice_flags_come_together() {
    let both = serve(&["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]).unwrap();
    assert!(both.validate().is_ok());
    assert_eq!(both.server.tool_call_parser.as_deref(), Some("hermes"));
    let alone = serve(&["--enable-auto-tool-choice"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(alone.contains("--tool-call-parser"), "{alone}");
    let parser = serve(&["--tool-call-parser", "mistral"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(parser.contains("--enable-auto-tool-choice"), "{parser}");
    assert!(
        serve(&[
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "pythonic"
        ])
        .is_err()
    );
}

#[test]
fn speculative_config_is_parsed_and_checked_at_the_command_line() {
    let a = serve(&[
        "--speculative-config",
        r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}"#,
    ])
    .unwrap();
    assert_eq!(
        a.scheduler.speculative_config,
        Some(SpeculativeConfig::Ngram {
            num_speculative_tokens: 4,
            prompt_lookup_min: 3,
            prompt_lookup_max: 3
        })
    );
    // A bad value is one clap error naming the key, before anything starts (and, through
    // the operator's extraArgs check, before any pod exists).
    let e = serve(&[
        "--speculative-config",
        r#"{"method": "eagle", "num_speculative_tokens": 2}"#,
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--speculative-config") && e.contains("\"eagle\" is not supported"),
        "{e}"
    );
    let gpu = serve(&[
        "--device",
        "cuda",
        "--speculative-config",
        r#"{"model": "/m/draft.gguf", "num_speculative_tokens": 2}"#,
    ])
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(gpu.contains("--device cpu only"), "{gpu}");
}

#[test]
fn lora_flags_take_vllms_spellings_and_limits() {
    let a = serve(&[
        "--enable-lora",
        "--lora-modules",
        "sql=/a/sql",
        r#"{"name": "chat", "path": "hf://org/chat", "base_model_name": "smol"}"#,
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
    ])
    .unwrap();
    a.validate().unwrap();
    assert_eq!(a.lora.lora_modules.len(), 2);
    assert_eq!(
        a.lora.lora_modules[1].base_model_name.as_deref(),
        Some("smol")
    );
    assert_eq!(a.lora.max_cpu_loras(), 2, "defaults to --max-loras");
    let d = serve(&[]).unwrap();
    assert_eq!(
        (d.lora.max_loras, d.lora.max_lora_rank),
        (1, 16),
        "vLLM's defaults"
    );
    for (argv, wanted) in [
        (
            &["--lora-modules", "a=/p"][..],
            "--lora-modules needs --enable-lora",
        ),
        (
            &["--enable-lora", "--max-lora-rank", "12"][..],
            "--max-lora-rank must be one of",
        ),
        (
            &["--enable-lora", "--max-loras", "0"][..],
            "--max-loras must be at least 1",
        ),
        (
            &["--enable-lora", "--max-loras", "3", "--max-cpu-loras", "2"][..],
            "--max-cpu-loras (2) must be at least --max-loras (3)",
        ),
        (
            &["--enable-lora", "--lora-modules", "a=/p", "a=/q"][..],
            "adapter name \"a\" is given twice",
        ),
        (
            &["--enable-lora", "--device", "cuda"][..],
            "--enable-lora runs on --device cpu only",
        ),
    ] {
        let e = serve(argv).unwrap().validate().unwrap_err();
        assert!(e.contains(wanted), "{argv:?}: {e}");
    }
    let e = serve(&["--enable-lora", "--lora-modules", "nopath"]).unwrap_err();
    assert!(e.to_string().contains("expected name=path"), "{e}");
}
