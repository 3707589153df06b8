// Candela's paged decode attention: one query token per sequence attends over
// its whole context, reading K/V rows through the sequence's block table.
//
// Layouts (all f32, row-major):
//   q       [num_seqs, num_heads, head_dim]
//   k_cache [num_slots, num_kv_heads, head_dim], v_cache likewise;
//           slot = block_id * block_size + offset
//   meta    [num_seqs, meta_stride] u32: meta[s][0] = context length,
//           meta[s][1..] = the sequence's block table
//   out     [num_seqs, num_heads, head_dim]
//
// Grid (num_seqs, num_heads); a block of WARPS warps. Warp w takes context
// positions w, w + WARPS, ... and keeps an online softmax (running max, sum and
// weighted V sum, each lane holding head_dim / 32 dimensions); the warps are
// merged through shared memory at the end. Scores are never stored, so any
// context length fits. Query head h reads KV head h / (num_heads / num_kv_heads).

#define MAX_DIMS_PER_LANE 8  // head_dim <= 256

extern "C" __global__ void paged_decode_attention_f32(
    const float* __restrict__ q,
    const float* __restrict__ k_cache,
    const float* __restrict__ v_cache,
    const unsigned int* __restrict__ meta,
    float* __restrict__ out,
    const int num_heads,
    const int num_kv_heads,
    const int head_dim,
    const int block_size,
    const int meta_stride,
    const float scale)
{
    extern __shared__ float smem[];  // [warps * head_dim] accumulators, then max and sum per warp
    const int seq = blockIdx.x;
    const int head = blockIdx.y;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    const int kv_head = head / (num_heads / num_kv_heads);
    const unsigned int* m = meta + (size_t)seq * meta_stride;
    const int ctx = (int)m[0];
    const unsigned int* table = m + 1;

    float qv[MAX_DIMS_PER_LANE];
    float acc[MAX_DIMS_PER_LANE];
    const float* qrow = q + ((size_t)seq * num_heads + head) * head_dim;
#pragma unroll
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? qrow[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float run_max = -INFINITY;
    float run_sum = 0.0f;
    for (int j = warp; j < ctx; j += warps) {
        const size_t slot = (size_t)table[j / block_size] * block_size + (j % block_size);
        const size_t row = (slot * num_kv_heads + kv_head) * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) s += qv[i] * k_cache[row + d];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        const float new_max = fmaxf(run_max, s);
        const float correction = expf(run_max - new_max);  // 0 on the first position
        const float p = expf(s - new_max);
        run_sum = run_sum * correction + p;
#pragma unroll
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = acc[i] * correction + p * v_cache[row + d];
        }
        run_max = new_max;
    }

    float* s_acc = smem;
    float* s_max = smem + warps * head_dim;
    float* s_sum = s_max + warps;
#pragma unroll
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) s_acc[warp * head_dim + d] = acc[i];
    }
    if (lane == 0) {
        s_max[warp] = run_max;
        s_sum[warp] = run_sum;
    }
    __syncthreads();

    float* orow = out + ((size_t)seq * num_heads + head) * head_dim;
    float g_max = -INFINITY;
    for (int w = 0; w < warps; ++w) g_max = fmaxf(g_max, s_max[w]);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float total = 0.0f;
        float o = 0.0f;
        for (int w = 0; w < warps; ++w) {
            if (s_max[w] == -INFINITY) continue;  // a warp that saw no position
            const float c = expf(s_max[w] - g_max);
            total += s_sum[w] * c;
            o += s_acc[w * head_dim + d] * c;
        }
        orow[d] = total > 0.0f ? o / total : 0.0f;  // an empty context (never scheduled) gives 0
    }
}
