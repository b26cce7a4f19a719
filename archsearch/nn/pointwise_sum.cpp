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

// 16 floats in registers, and the same in memory: unaligned, and allowed to alias the float arrays it
// is loaded from and stored to (as GCC's own __m512_u). Registers keep the plain type, which lets the
// compiler hold the accumulators there (the may-alias type on them cost 4-13 % per node).
typedef float v16 __attribute__((vector_size(64)));
typedef float v16_mem __attribute__((vector_size(64), aligned(4), __may_alias__));

inline v16 load(const float* p) { return *reinterpret_cast<const v16_mem*>(p); }
inline void store(float* p, v16 x) { *reinterpret_cast<v16_mem*>(p) = x; }

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
  for (int v = 0; v < V; ++v) bias[v] = load(plan.bias + 16 * v);
  const size_t sources = plan.rows.size();
  int64_t p = begin;
  for (; p < end; p += PB) {
    const int n = static_cast<int>(std::min<int64_t>(PB, end - p));
    v16 acc[PB][V];
    for (int i = 0; i < PB; ++i)
      for (int v = 0; v < V; ++v) {
        acc[i][v] = bias[v];
        if (plan.init != nullptr && i < n) acc[i][v] += load(plan.init + (p + i) * plan.init_ld + 16 * v);
      }
    for (size_t s = 0; s < sources; ++s) {
      const int64_t L = plan.ld[s], K = plan.cin[s];
      const float* x = plan.rows[s] + p * L;
      const float* w = plan.w[s];
      if (n == PB) {  // a constant trip count, which the compiler unrolls into registers; the tail below
        for (int64_t k = 0; k < K; ++k) {
          v16 wk[V];
          for (int v = 0; v < V; ++v) wk[v] = load(w + k * CO + 16 * v);
          for (int i = 0; i < PB; ++i) {
            const float xv = x[i * L + k];
            for (int v = 0; v < V; ++v) acc[i][v] += xv * wk[v];
          }
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          v16 wk[V];
          for (int v = 0; v < V; ++v) wk[v] = load(w + k * CO + 16 * v);
          for (int i = 0; i < n; ++i) {
            const float xv = x[i * L + k];
            for (int v = 0; v < V; ++v) acc[i][v] += xv * wk[v];
          }
        }
      }
    }
    for (int i = 0; i < n; ++i) {
      float* o = plan.out + (p + i) * CO;
      for (int v = 0; v < V; ++v) store(o + 16 * v, plan.relu ? (zero > acc[i][v] ? zero : acc[i][v]) : acc[i][v]);  // NaN stays
    }
  }
}

void run_rows(const Plan& plan, int64_t begin, int64_t end, int64_t co) {
  switch (co / 16) {  // accumulators: PB * V of the 32 vector registers AVX-512 has (elsewhere they spill)
    case 1: return rows_block<1, 8>(plan, begin, end);
    case 2: return rows_block<2, 8>(plan, begin, end);
    case 3: return rows_block<3, 6>(plan, begin, end);
    case 4: return rows_block<4, 6>(plan, begin, end);
    case 5: return rows_block<5, 4>(plan, begin, end);
    case 6: return rows_block<6, 4>(plan, begin, end);
    case 7: return rows_block<7, 3>(plan, begin, end);
    case 8: return rows_block<8, 3>(plan, begin, end);
    default: TORCH_CHECK(false, "pointwise_sum: ", co, " output channels (multiples of 16 up to 128)");
  }
}

}  // namespace

namespace {

bool fits(const torch::Tensor& t, int64_t dim) {
  return t.defined() && t.dim() == dim && t.scalar_type() == torch::kFloat && t.device().is_cpu();
}

}  // namespace

// start: None or an (N, CO, H, W) map; rows: per source (P x cin) with unit channel stride, P = N*H*W;
// weights: per source a contiguous (cin x CO) matrix; bias: (CO). Returns the (N, CO, H, W) sum,
// channels-last, or None where the kernel does not apply (the caller then runs the torch form).
py::object pointwise_sum(const c10::optional<torch::Tensor>& start, const std::vector<torch::Tensor>& rows,
                         const std::vector<torch::Tensor>& weights, const torch::Tensor& bias,
                         const std::vector<int64_t>& out_hw, bool relu) {
  if (rows.empty() || rows.size() != weights.size() || out_hw.size() != 2 || !fits(bias, 1) ||
      !bias.is_contiguous())
    return py::none();
  const int64_t CO = bias.size(0), H = out_hw[0], W = out_hw[1];
  const int64_t P = rows[0].size(0);
  if (CO == 0 || CO % 16 != 0 || CO > 128 || H * W == 0 || P % (H * W) != 0) return py::none();
  Plan plan;
  for (size_t s = 0; s < rows.size(); ++s) {
    const auto& r = rows[s];
    const auto& w = weights[s];
    if (!fits(r, 2) || r.size(0) != P || r.stride(1) != 1 || !fits(w, 2) || !w.is_contiguous() ||
        w.size(0) != r.size(1) || w.size(1) != CO)
      return py::none();
    plan.rows.push_back(r.data_ptr<float>());
    plan.ld.push_back(r.stride(0));
    plan.cin.push_back(r.size(1));
    plan.w.push_back(w.data_ptr<float>());
  }
  const int64_t N = P / (H * W);
  torch::Tensor init;
  if (start.has_value()) {
    const auto& t = *start;
    if (!fits(t, 4) || t.size(0) != N || t.size(1) != CO || t.size(2) != H || t.size(3) != W) return py::none();
    init = t.contiguous(at::MemoryFormat::ChannelsLast);
    plan.init = init.data_ptr<float>();
    plan.init_ld = CO;
  }
  auto out = torch::empty({N, CO, H, W}, bias.options().memory_format(at::MemoryFormat::ChannelsLast));
  plan.bias = bias.data_ptr<float>();
  plan.out = out.data_ptr<float>();
  plan.relu = relu;
  {
    py::gil_scoped_release free_python;  // plain memory work: other Python threads may run meanwhile
    at::parallel_for(0, P, 1024, [&](int64_t begin, int64_t end) { run_rows(plan, begin, end, CO); });
  }
  return py::cast(out);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pointwise_sum", &pointwise_sum, "fused sum of 1x1 products over (pixels x channels) rows");
}
