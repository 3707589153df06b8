//! [`EngineMetrics`] ⇄ [`StatsSnapshot`], lossless both ways.
//!
//! Every struct is destructured exhaustively, so a field added to the metrics
//! fails to compile here until the snapshot carries it too: the sidecar can never
//! silently render less than the engine. Histograms travel as bounds, per-bucket
//! counts and sum; a snapshot whose counts do not match its bounds is refused
//! rather than rendered wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use candela_core::{SchedulerStats, ServiceTier, SpecDecodingStats, TierStats};

use super::pb;
use crate::error::Error;
use crate::metrics::{CacheInfo, EngineMetrics, Histogram, Histograms, LoraMetrics};

impl From<&EngineMetrics> for pb::StatsSnapshot {
    fn from(m: &EngineMetrics) -> Self {
        let EngineMetrics {
            model_name,
            cache,
            scheduler,
            prompt_tokens,
            generation_tokens,
            success_stop,
            success_length,
            success_abort,
            histograms,
            num_speculative_tokens,
            lora,
        } = m;
        let LoraMetrics {
            max_loras,
            names,
            requests,
            updated_unix,
        } = lora;
        pb::StatsSnapshot {
            model_name: model_name.clone(),
            cache: Some(cache.into()),
            scheduler: Some(scheduler.into()),
            prompt_tokens: *prompt_tokens,
            generation_tokens: *generation_tokens,
            request_success: Some(pb::RequestSuccess {
                stop: *success_stop,
                length: *success_length,
                abort: *success_abort,
            }),
            histograms: Some(histograms.into()),
            taken_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            num_speculative_tokens: *num_speculative_tokens as u64,
            lora: Some(pb::LoraStats {
                max_loras: *max_loras as u64,
                names: names.iter().map(|(k, v)| (*k, v.clone())).collect(),
                requests: requests.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                updated_unix: *updated_unix,
            }),
        }
    }
}

impl TryFrom<pb::StatsSnapshot> for EngineMetrics {
    type Error = Error;

    fn try_from(s: pb::StatsSnapshot) -> Result<Self, Error> {
        let pb::StatsSnapshot {
            model_name,
            cache,
            scheduler,
            prompt_tokens,
            generation_tokens,
            request_success,
            histograms,
            taken_at_unix_ms: _,
            num_speculative_tokens,
            lora,
        } = s;
        let lora = lora.unwrap_or_default();
        let success = request_success.ok_or(Error::SnapshotMissing("request_success"))?;
        Ok(EngineMetrics {
            model_name,
            cache: cache.ok_or(Error::SnapshotMissing("cache"))?.into(),
            scheduler: scheduler.ok_or(Error::SnapshotMissing("scheduler"))?.into(),
            prompt_tokens,
            generation_tokens,
            success_stop: success.stop,
            success_length: success.length,
            success_abort: success.abort,
            histograms: histograms
                .ok_or(Error::SnapshotMissing("histograms"))?
                .try_into()?,
            num_speculative_tokens: to_usize(num_speculative_tokens),
            lora: LoraMetrics {
                max_loras: to_usize(lora.max_loras),
                names: lora.names.into_iter().collect(),
                requests: lora.requests.into_iter().collect(),
                updated_unix: lora.updated_unix,
            },
        })
    }
}

impl From<&CacheInfo> for pb::CacheInfo {
    fn from(c: &CacheInfo) -> Self {
        let CacheInfo {
            block_size,
            num_gpu_blocks,
            num_cpu_blocks,
            enable_prefix_caching,
            cache_dtype,
            gpu_memory_utilization,
            swap_space_gib,
        } = c;
        pb::CacheInfo {
            block_size: *block_size as u64,
            num_gpu_blocks: *num_gpu_blocks as u64,
            num_cpu_blocks: *num_cpu_blocks as u64,
            enable_prefix_caching: *enable_prefix_caching,
            cache_dtype: cache_dtype.clone(),
            gpu_memory_utilization: *gpu_memory_utilization,
            swap_space_gib: *swap_space_gib,
        }
    }
}

impl From<pb::CacheInfo> for CacheInfo {
    fn from(c: pb::CacheInfo) -> Self {
        CacheInfo {
            block_size: to_usize(c.block_size),
            num_gpu_blocks: to_usize(c.num_gpu_blocks),
            num_cpu_blocks: to_usize(c.num_cpu_blocks),
            enable_prefix_caching: c.enable_prefix_caching,
            cache_dtype: c.cache_dtype,
            gpu_memory_utilization: c.gpu_memory_utilization,
            swap_space_gib: c.swap_space_gib,
        }
    }
}

impl From<&SchedulerStats> for pb::SchedulerStats {
    fn from(s: &SchedulerStats) -> Self {
        let SchedulerStats {
            num_running,
            num_waiting,
            num_swapped,
            device_cache_usage,
            host_cache_usage,
            prefix_cache_queries,
            prefix_cache_hits,
            num_preemptions,
            spec_decoding,
            running_loras,
            waiting_loras,
            tiers,
        } = s;
        let SpecDecodingStats {
            num_drafts,
            num_draft_tokens,
            num_accepted_tokens,
            num_accepted_tokens_per_pos,
        } = spec_decoding;
        pb::SchedulerStats {
            num_running: *num_running as u64,
            num_waiting: *num_waiting as u64,
            num_swapped: *num_swapped as u64,
            device_cache_usage: *device_cache_usage,
            host_cache_usage: *host_cache_usage,
            prefix_cache_queries: *prefix_cache_queries,
            prefix_cache_hits: *prefix_cache_hits,
            num_preemptions: *num_preemptions,
            spec_decoding: Some(pb::SpecDecodingStats {
                num_drafts: *num_drafts,
                num_draft_tokens: *num_draft_tokens,
                num_accepted_tokens: *num_accepted_tokens,
                num_accepted_tokens_per_pos: num_accepted_tokens_per_pos.clone(),
            }),
            running_loras: running_loras.clone(),
            waiting_loras: waiting_loras.clone(),
            tiers: ServiceTier::ALL
                .into_iter()
                .zip(tiers)
                .map(|(tier, TierStats { running, waiting })| pb::TierStats {
                    tier: tier.as_str().to_owned(),
                    running: *running as u64,
                    waiting: *waiting as u64,
                })
                .collect(),
        }
    }
}

impl From<pb::SchedulerStats> for SchedulerStats {
    fn from(s: pb::SchedulerStats) -> Self {
        SchedulerStats {
            num_running: to_usize(s.num_running),
            num_waiting: to_usize(s.num_waiting),
            num_swapped: to_usize(s.num_swapped),
            device_cache_usage: s.device_cache_usage,
            host_cache_usage: s.host_cache_usage,
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            num_preemptions: s.num_preemptions,
            spec_decoding: s
                .spec_decoding
                .map(|d| SpecDecodingStats {
                    num_drafts: d.num_drafts,
                    num_draft_tokens: d.num_draft_tokens,
                    num_accepted_tokens: d.num_accepted_tokens,
                    num_accepted_tokens_per_pos: d.num_accepted_tokens_per_pos,
                })
                .unwrap_or_default(),
            running_loras: s.running_loras,
            waiting_loras: s.waiting_loras,
            // By name; a tier this build does not know is left out (its counts stay 0).
            tiers: ServiceTier::ALL.map(|tier| {
                s.tiers
                    .iter()
                    .find(|t| t.tier == tier.as_str())
                    .map_or_else(TierStats::default, |t| TierStats {
                        running: to_usize(t.running),
                        waiting: to_usize(t.waiting),
                    })
            }),
        }
    }
}

impl From<&Histograms> for pb::Histograms {
    fn from(h: &Histograms) -> Self {
        let Histograms {
            time_to_first_token,
            inter_token_latency,
            request_time_per_output_token,
            e2e_request_latency,
            request_queue_time,
            request_inference_time,
            request_prefill_time,
            request_decode_time,
            request_prompt_tokens,
            request_generation_tokens,
            request_max_num_generation_tokens,
            request_params_max_tokens,
            request_params_n,
            iteration_tokens,
        } = h;
        let p = |h: &Histogram| {
            Some(pb::Histogram {
                bounds: h.bounds.clone(),
                counts: h.counts.clone(),
                sum: h.sum,
            })
        };
        pb::Histograms {
            time_to_first_token: p(time_to_first_token),
            inter_token_latency: p(inter_token_latency),
            request_time_per_output_token: p(request_time_per_output_token),
            e2e_request_latency: p(e2e_request_latency),
            request_queue_time: p(request_queue_time),
            request_inference_time: p(request_inference_time),
            request_prefill_time: p(request_prefill_time),
            request_decode_time: p(request_decode_time),
            request_prompt_tokens: p(request_prompt_tokens),
            request_generation_tokens: p(request_generation_tokens),
            request_max_num_generation_tokens: p(request_max_num_generation_tokens),
            request_params_max_tokens: p(request_params_max_tokens),
            request_params_n: p(request_params_n),
            iteration_tokens: p(iteration_tokens),
        }
    }
}

impl TryFrom<pb::Histograms> for Histograms {
    type Error = Error;

    fn try_from(h: pb::Histograms) -> Result<Self, Error> {
        Ok(Histograms {
            time_to_first_token: histogram("time_to_first_token", h.time_to_first_token)?,
            inter_token_latency: histogram("inter_token_latency", h.inter_token_latency)?,
            request_time_per_output_token: histogram(
                "request_time_per_output_token",
                h.request_time_per_output_token,
            )?,
            e2e_request_latency: histogram("e2e_request_latency", h.e2e_request_latency)?,
            request_queue_time: histogram("request_queue_time", h.request_queue_time)?,
            request_inference_time: histogram("request_inference_time", h.request_inference_time)?,
            request_prefill_time: histogram("request_prefill_time", h.request_prefill_time)?,
            request_decode_time: histogram("request_decode_time", h.request_decode_time)?,
            request_prompt_tokens: histogram("request_prompt_tokens", h.request_prompt_tokens)?,
            request_generation_tokens: histogram(
                "request_generation_tokens",
                h.request_generation_tokens,
            )?,
            request_max_num_generation_tokens: histogram(
                "request_max_num_generation_tokens",
                h.request_max_num_generation_tokens,
            )?,
            request_params_max_tokens: histogram(
                "request_params_max_tokens",
                h.request_params_max_tokens,
            )?,
            request_params_n: histogram("request_params_n", h.request_params_n)?,
            iteration_tokens: histogram("iteration_tokens", h.iteration_tokens)?,
        })
    }
}

fn histogram(name: &'static str, h: Option<pb::Histogram>) -> Result<Histogram, Error> {
    let h = h.ok_or(Error::SnapshotMissing(name))?;
    if h.counts.len() != h.bounds.len() + 1 {
        return Err(Error::SnapshotHistogram {
            name,
            bounds: h.bounds.len(),
            counts: h.counts.len(),
        });
    }
    Ok(Histogram {
        bounds: h.bounds,
        counts: h.counts,
        sum: h.sum,
    })
}

/// Gauges and sizes travel as `u64`; on the 64-bit targets Candela runs on this never saturates.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Metrics with every field set to a distinct, non-default value.
    fn busy_metrics() -> EngineMetrics {
        let cache = CacheInfo {
            block_size: 16,
            num_gpu_blocks: 1234,
            num_cpu_blocks: 56,
            enable_prefix_caching: true,
            cache_dtype: "auto".into(),
            gpu_memory_utilization: 0.9,
            swap_space_gib: 1.5,
        };
        let mut m = EngineMetrics::new("smol \"lm\"", 512, cache);
        m.scheduler = SchedulerStats {
            num_running: 3,
            num_waiting: 4,
            num_swapped: 1,
            device_cache_usage: 0.673,
            host_cache_usage: 0.125,
            prefix_cache_queries: 1000,
            prefix_cache_hits: 450,
            num_preemptions: 7,
            spec_decoding: SpecDecodingStats {
                num_drafts: 20,
                num_draft_tokens: 60,
                num_accepted_tokens: 33,
                num_accepted_tokens_per_pos: vec![15, 11, 7],
            },
            running_loras: vec![1, 3],
            waiting_loras: vec![2],
            tiers: [
                TierStats {
                    running: 1,
                    waiting: 0,
                },
                TierStats {
                    running: 2,
                    waiting: 1,
                },
                TierStats {
                    running: 0,
                    waiting: 3,
                },
            ],
        };
        m.lora = LoraMetrics {
            max_loras: 2,
            names: [(1, "sql".into()), (2, "chat".into()), (3, "a\"b".into())].into(),
            requests: [("sql".into(), 5), ("chat".into(), 1), ("a\"b".into(), 2)].into(),
            updated_unix: 1_765_000_000.5,
        };
        m.num_speculative_tokens = 3;
        m.prompt_tokens = 4321;
        m.generation_tokens = 8765;
        m.success_stop = 11;
        m.success_length = 12;
        m.success_abort = 13;
        let h = &mut m.histograms;
        for (i, hist) in [
            &mut h.time_to_first_token,
            &mut h.inter_token_latency,
            &mut h.request_time_per_output_token,
            &mut h.e2e_request_latency,
            &mut h.request_queue_time,
            &mut h.request_inference_time,
            &mut h.request_prefill_time,
            &mut h.request_decode_time,
            &mut h.request_prompt_tokens,
            &mut h.request_generation_tokens,
            &mut h.request_max_num_generation_tokens,
            &mut h.request_params_max_tokens,
            &mut h.request_params_n,
            &mut h.iteration_tokens,
        ]
        .into_iter()
        .enumerate()
        {
            for v in [0.0007, 0.3 * (i + 1) as f64, 17.0, 1e9] {
                hist.observe(v);
            }
        }
        m
    }

    #[test]
    fn round_trip_through_the_wire_is_identical() {
        let original = busy_metrics();
        let bytes = pb::StatsSnapshot::from(&original).encode_to_vec();
        let decoded = pb::StatsSnapshot::decode(bytes.as_slice()).expect("decodes");
        let back = EngineMetrics::try_from(decoded).expect("valid snapshot");
        assert_eq!(back, original);
        assert_eq!(back.render(), original.render());
    }

    #[test]
    fn fresh_engine_metrics_round_trip() {
        let original = EngineMetrics::new("m", 100, CacheInfo::default());
        let back =
            EngineMetrics::try_from(pb::StatsSnapshot::from(&original)).expect("valid snapshot");
        assert_eq!(back, original);
    }

    #[test]
    fn malformed_snapshots_are_refused() {
        let mut snapshot = pb::StatsSnapshot::from(&busy_metrics());
        snapshot
            .histograms
            .as_mut()
            .and_then(|h| h.iteration_tokens.as_mut())
            .expect("set")
            .counts
            .pop();
        assert!(matches!(
            EngineMetrics::try_from(snapshot),
            Err(Error::SnapshotHistogram {
                name: "iteration_tokens",
                ..
            })
        ));
        let mut snapshot = pb::StatsSnapshot::from(&busy_metrics());
        snapshot.scheduler = None;
        assert!(matches!(
            EngineMetrics::try_from(snapshot),
            Err(Error::SnapshotMissing("scheduler"))
        ));
    }
}
