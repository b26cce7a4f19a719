// A tailored node's sum of 1x1 products in one pass over its maps' (pixels x channels) rows:
//   out[p, :] = act(bias + init[p, :] + sum_s rows_s[p, :] @ W_s^T)
// Each output row is held in vector registers while every source's row is read once, so a node
// with three proxies reads its sources once and writes its sum once, instead of one matrix
// product (a read and a write of the sum) per proxy and a ReLU pass after them.
// Built by archsearch/nn/pointwise.py with torch.utils.cpp_extension on first use.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64), aligned(4)));  // 16 floats, unaligned loads allowed

struct Plan {
  std::vector<const float*> rows;  // per source: its first row
  std::vector<int64_t> ld;         // per source: elements between rows
  std::vector<int64_t> cin;        // per source: channels
  std::vector<const float*> w;     // per source: (cin x CO) matrix, row-major
  const float* init = nullptr;     // optional (P x CO) rows added to the bias
  int64_t init_ld = 0;
  const float* bias = nullptr;
  float* out = nullptr;            // (P x CO), contiguous
  bool relu = false;
};

// Rows [begin, end) for CO = 16 * V output channels, PB pixels at a time (PB * V accumulators).
template <int V, int PB>
void rows_block(const Plan& plan, int64_t begin, int64_t end) {
  constexpr int CO = 16 * V;
  const v16 zero = {};
  v16 bias[V];
  for (int v = 0; v < V; ++v) bias[v] = *reinterpret_cast<const v16*>(plan.bias + 16 * v);
  const size_t sources = plan.rows.size();
  int64_t p = begin;
  for (; p < end; p += PB) {
    const int n = static_cast<int>(std::min<int64_t>(PB, end - p));
    v16 acc[PB][V];
    for (int i = 0; i < PB; ++i)
      for (int v = 0; v < V; ++v) {
        acc[i][v] = bias[v];
        if (plan.init != nullptr && i < n) acc[i][v] += *reinterpret_cast<const v16*>(plan.init + (p + i) * plan.init_ld + 16 * v);
      }
    for (size_t s = 0; s < sources; ++s) {
      const int64_t L = plan.ld[s], K = plan.cin[s];
      const float* x = plan.rows[s] + p * L;
      const float* w = plan.w[s];
      if (n == PB) {
        for (int64_t k = 0; k < K; ++k) {
          v16 wk[V];
          for (int v = 0; v < V; ++v) wk[v] = *reinterpret_cast<const v16*>(w + k * CO + 16 * v);
          for (int i = 0; i < PB; ++i) {
            const float xv = x[i * L + k];
            for (int v = 0; v < V; ++v) acc[i][v] += xv * wk[v];
          }
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          v16 wk[V];
          for (int v = 0; v < V; ++v) wk[v] = *reinterpret_cast<const v16*>(w + k * CO + 16 * v);
          for (int i = 0; i < n; ++i) {
            const float xv = x[i * L + k];
            for (int v = 0; v < V; ++v) acc[i][v] += xv * wk[v];
          }
        }
      }
    }
    for (int i = 0; i < n; ++i) {
      v16* o = reinterpret_cast<v16*>(plan.out + (p + i) * CO);
      for (int v = 0; v < V; ++v) o[v] = plan.relu ? (acc[i][v] > zero ? acc[i][v] : zero) : acc[i][v];
    }
  }
}

void run_rows(const Plan& plan, int64_t begin, int64_t end, int64_t co) {
  switch (co / 16) {  // accumulators: PB * V vector registers of the 32 AVX-512 has
    case 1: return rows_block<1, 8>(plan, begin, end);
    case 2: return rows_block<2, 8>(plan, begin, end);
    case 3: return rows_block<3, 6>(plan, begin, end);
    case 4: return rows_block<4, 6>(plan, begin, end);
    case 5: return rows_block<5, 4>(plan, begin, end);
    case 6: return rows_block<6, 4>(plan, begin, end);
    case 7: return rows_block<7, 3>(plan, begin, end);
    case 8: return rows_block<8, 3>(plan, begin, end);
    default: TORCH_CHECK(false, "pointwise_sum: ", co, " output channels (supported: multiples of 16 up to 128)");
  }
}

}  // namespace

// rows: per source a (P x cin) float32 CPU matrix with unit column stride; weights: per source a
// contiguous (cin x CO) matrix; bias: (CO); init: empty or (P x CO) with unit column stride.
// Returns (P x CO), contiguous.
torch::Tensor pointwise_sum(const std::vector<torch::Tensor>& rows, const std::vector<torch::Tensor>& weights,
                            const torch::Tensor& bias, const torch::Tensor& init, bool relu) {
  TORCH_CHECK(!rows.empty() && rows.size() == weights.size(), "pointwise_sum: one weight per source");
  const int64_t P = rows[0].size(0), CO = bias.size(0);
  TORCH_CHECK(CO % 16 == 0 && CO <= 128, "pointwise_sum: ", CO, " output channels (multiples of 16 up to 128)");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == torch::kFloat && bias.device().is_cpu(),
              "pointwise_sum: contiguous float32 CPU bias");
  Plan plan;
  for (size_t s = 0; s < rows.size(); ++s) {
    const auto& r = rows[s];
    const auto& w = weights[s];
    TORCH_CHECK(r.dim() == 2 && r.size(0) == P && r.stride(1) == 1 && r.scalar_type() == torch::kFloat &&
                r.device().is_cpu() && w.device().is_cpu(),
                "pointwise_sum: source ", s, " must be float32 CPU (P x C) rows with unit channel stride");
    TORCH_CHECK(w.dim() == 2 && w.size(0) == r.size(1) && w.size(1) == CO && w.is_contiguous() &&
                w.scalar_type() == torch::kFloat, "pointwise_sum: weight ", s, " must be contiguous float32 (",
                r.size(1), " x ", CO, ")");
    plan.rows.push_back(r.data_ptr<float>());
    plan.ld.push_back(r.stride(0));
    plan.cin.push_back(r.size(1));
    plan.w.push_back(w.data_ptr<float>());
  }
  if (init.numel() > 0) {
    TORCH_CHECK(init.dim() == 2 && init.size(0) == P && init.size(1) == CO && init.stride(1) == 1 &&
                init.scalar_type() == torch::kFloat && init.device().is_cpu(),
                "pointwise_sum: init must be float32 CPU (P x CO) rows");
    plan.init = init.data_ptr<float>();
    plan.init_ld = init.stride(0);
  }
  auto out = torch::empty({P, CO}, bias.options());
  plan.bias = bias.data_ptr<float>();
  plan.out = out.data_ptr<float>();
  plan.relu = relu;
  at::parallel_for(0, P, 1024, [&](int64_t begin, int64_t end) { run_rows(plan, begin, end, CO); });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pointwise_sum", &pointwise_sum, "fused sum of 1x1 products over (pixels x channels) rows");
}
