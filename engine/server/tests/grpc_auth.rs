//! API keys on the gRPC API, against the real engine: with `--api-key` and
//! `--api-key-tiers`, `Generate` needs a valid `authorization` metadata key (as `/v1/*`
//! needs its header) and a tier file's key caps its `service_tier`; `Health` and
//! `WatchStats` stay open (like `/health` and `/metrics`), so probes and the sidecar
//! need no key.

mod common;

use std::process::Stdio;

use candela::grpc::{
    GenerateRequest, GrpcClient, HealthRequest, Prompt, SamplingParams, WatchStatsRequest,
};
use common::{free_port, spawn_serve};

const MAIN_KEY: &str = "sk-main-key";
const BATCH_KEY: &str = "sk-batch-key";

fn generate(key: Option<&str>, tier: &str) -> tonic::Request<GenerateRequest> {
    let mut request = tonic::Request::new(GenerateRequest {
        prompt: Some(Prompt::Text("The capital of France is".into())),
        sampling: Some(SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(2),
            service_tier: Some(tier.into()),
            ..Default::default()
        }),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// The tier every response of a successful call echoes, or the refusal.
async fn run(
    client: &mut GrpcClient<tonic::transport::Channel>,
    key: Option<&str>,
    tier: &str,
) -> Result<String, tonic::Status> {
    let mut stream = client.generate(generate(key, tier)).await?.into_inner();
    let mut tiers = Vec::new();
    while let Some(event) = stream.message().await? {
        tiers.push(event.service_tier);
    }
    assert!(
        !tiers.is_empty() && tiers.iter().all(|t| *t == tiers[0]),
        "{tiers:?}"
    );
    Ok(tiers[0].clone())
}

#[test]
fn generate_needs_a_key_and_tier_keys_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let tiers = dir.path().join("keys");
    std::fs::write(&tiers, format!("{BATCH_KEY} flex\n")).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let grpc_port = grpc.to_string();
    let _engine = spawn_serve(
        http,
        [
            "--grpc-port",
            &grpc_port,
            "--max-model-len",
            "256",
            "--kv-cache-memory",
            "32MiB",
            "--api-key",
            MAIN_KEY,
            "--api-key-tiers",
            tiers.to_str().unwrap(),
        ],
        Stdio::inherit(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = GrpcClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        for key in [None, Some("sk-wrong")] {
            let e = run(&mut client, key, "default").await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{key:?}: {e}");
            assert!(!e.message().contains("sk-"), "the key is never echoed: {e}");
        }
        assert_eq!(
            run(&mut client, Some(MAIN_KEY), "priority").await.unwrap(),
            "priority"
        );
        // The batch key's tier is its ceiling and its default.
        assert_eq!(
            run(&mut client, Some(BATCH_KEY), "priority").await.unwrap(),
            "flex"
        );
        assert_eq!(
            run(&mut client, Some(BATCH_KEY), "auto").await.unwrap(),
            "flex"
        );
        // Probes and the sidecar read without a key.
        client
            .health(HealthRequest {})
            .await
            .expect("Health is open");
        let mut stats = client
            .watch_stats(WatchStatsRequest { interval_ms: 50 })
            .await
            .expect("WatchStats is open")
            .into_inner();
        assert!(stats.message().await.unwrap().is_some());
    });
}
