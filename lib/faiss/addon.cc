// A thin N-API face over faiss (Debian's static libfaiss.a 1.7.3 + OpenBLAS): build, train, add
// (with ids), merge, search, search-and-reconstruct, tune by ParameterSpace string, reconstruct,
// write and read (optionally memory-mapped). Long calls (read, train, add, merge, search, write)
// run on libuv's pool and resolve a Promise; a faiss exception becomes a rejected Promise / a
// thrown JS Error, never a crash.
// Concurrency: every index carries a shared_mutex. Searches, reconstructs and writes share it;
// train/add/setParameters/dispose need it alone. Calls made on the JS thread never wait for it:
// they throw "busy" instead, so the event loop is never blocked behind a training run.
#include <napi.h>

#include <faiss/AutoTune.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IVFlib.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#include <faiss/utils/distances.h>
#include <sys/stat.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <mutex>
#include <memory>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace cah_faiss {
const char* distanceKernels();  // distance-kernels.cc: "avx2" or "generic"
std::unique_ptr<faiss::Index> withFastFp16Scan(std::unique_ptr<faiss::Index> index);  // ivf-sq-fp16.cc
bool fastFp16Scan();
std::string attachSq8Copy(faiss::Index* index, const std::string& copyPath, const std::string& indexPath);  // ivf-sq-fp16.cc
}

namespace {

using idx_t = faiss::Index::idx_t;

// ---- interruption: faiss polls InterruptCallback in k-means / training loops ----
std::atomic<bool> g_interrupt{false};
struct FlagInterrupt : faiss::InterruptCallback {
  bool want_interrupt() override { return g_interrupt.load(); }
};

struct Holder {
  std::unique_ptr<faiss::Index> index;
  std::shared_mutex mutex;
};

// Vectors held outside the JS heap: a training sample can exceed Node 20's 4 GiB ArrayBuffer limit
// (LAION-400M: 4M x 512 floats = 8 GB), so it is assembled here row block by row block.
class FloatMatrix : public Napi::ObjectWrap<FloatMatrix> {
 public:
  static Napi::FunctionReference ctor;
  std::shared_ptr<std::vector<float>> data = std::make_shared<std::vector<float>>();
  int64_t rows = 0, d = 0;
  explicit FloatMatrix(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FloatMatrix>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "FloatMatrix(rows, d)");
    rows = info[0].As<Napi::Number>().Int64Value();
    d = info[1].As<Napi::Number>().Int64Value();
    if (rows < 0 || d <= 0) throw Napi::RangeError::New(env, "FloatMatrix: rows >= 0 and d > 0");
    try {
      data->resize(static_cast<size_t>(rows * d));
    } catch (const std::bad_alloc&) {
      throw Napi::Error::New(env, "FloatMatrix: cannot allocate " + std::to_string(rows) + " x " + std::to_string(d) + " floats");
    }
  }
  /** set(row, Float32Array): copies whole rows starting at `row`. */
  Napi::Value Set(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t row = info[0].As<Napi::Number>().Int64Value();
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) throw Napi::TypeError::New(env, "FloatMatrix.set: expected a Float32Array");
    auto a = info[1].As<Napi::Float32Array>();
    if (a.ElementLength() % d != 0 || row < 0 || row * d + static_cast<int64_t>(a.ElementLength()) > rows * d) throw Napi::RangeError::New(env, "FloatMatrix.set: rows out of range");
    std::copy(a.Data(), a.Data() + a.ElementLength(), data->data() + row * d);
    return env.Undefined();
  }
  Napi::Value Release(const Napi::CallbackInfo& info) {
    data = std::make_shared<std::vector<float>>();
    rows = 0;
    return info.Env().Undefined();
  }
  Napi::Value GetRows(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(rows)); }
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "FloatMatrix", {
        InstanceMethod<&FloatMatrix::Set>("set"),
        InstanceMethod<&FloatMatrix::Release>("release"),
        InstanceAccessor<&FloatMatrix::GetRows>("rows"),
    });
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
    exports.Set("FloatMatrix", f);
  }
};
Napi::FunctionReference FloatMatrix::ctor;

class Index : public Napi::ObjectWrap<Index> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit Index(const Napi::CallbackInfo& info);
  std::shared_ptr<Holder> holder = std::make_shared<Holder>();

 private:
  static Napi::Value Factory(const Napi::CallbackInfo& info);
  static Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Train(const Napi::CallbackInfo& info);
  Napi::Value Add(const Napi::CallbackInfo& info);
  Napi::Value AddWithIds(const Napi::CallbackInfo& info);
  Napi::Value MergeFrom(const Napi::CallbackInfo& info);
  Napi::Value Search(const Napi::CallbackInfo& info);
  Napi::Value SearchAndReconstruct(const Napi::CallbackInfo& info);
  // search(x, nq, k, threads) and searchAndReconstruct: the same arguments, job and result, plus
  // the result vectors when withVectors.
  Napi::Value SearchJob(const Napi::CallbackInfo& info, const char* name, bool withVectors);
  Napi::Value SearchAndDedup(const Napi::CallbackInfo& info);
  Napi::Value AttachSq8Copy(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value SetParameters(const Napi::CallbackInfo& info);
  Napi::Value SplitQueriesOverLists(const Napi::CallbackInfo& info);
  Napi::Value ConfigureTraining(const Napi::CallbackInfo& info);
  Napi::Value Reconstruct(const Napi::CallbackInfo& info);
  Napi::Value CodecRoundTrip(const Napi::CallbackInfo& info);
  Napi::Value Describe(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetNtotal(const Napi::CallbackInfo& info);
  Napi::Value GetD(const Napi::CallbackInfo& info);
  Napi::Value GetMetric(const Napi::CallbackInfo& info);
  Napi::Value GetIsTrained(const Napi::CallbackInfo& info);

  faiss::Index* live(Napi::Env env) {
    if (!holder->index) throw Napi::Error::New(env, "faiss index was disposed");
    return holder->index.get();
  }
};

Napi::FunctionReference Index::ctor;

Index::Index(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Index>(info) {}

// A Promise-returning job on libuv's pool. `work` runs off the JS thread and may throw; `done`
// builds the resolved value on the JS thread. References keep the index and input arrays alive.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "faiss"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), done_(std::move(done)) {}
  void keep(Napi::Value v) { if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown faiss error");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::vector<Napi::ObjectReference> refs_;
};

int threadsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsNumber()) {
    int t = info[i].As<Napi::Number>().Int32Value();
    if (t > 0) return t;
  }
  return 0;
}

const float* floatsArg(const Napi::CallbackInfo& info, size_t i, size_t need, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a Float32Array");
  auto a = info[i].As<Napi::Float32Array>();
  if (a.ElementLength() < need)
    throw Napi::RangeError::New(info.Env(), std::string(what) + ": Float32Array has " + std::to_string(a.ElementLength()) + " values, need " + std::to_string(need));
  return a.Data();
}

int64_t countArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0) || v != std::floor(v) || v > 9007199254740991.0) throw Napi::RangeError::New(info.Env(), std::string(what) + ": expected a non-negative integer");
  return static_cast<int64_t>(v);
}

std::string metricName(faiss::MetricType m) {
  switch (m) {
    case faiss::METRIC_INNER_PRODUCT: return "ip";
    case faiss::METRIC_L2: return "l2";
    default: return "other";
  }
}

Napi::Object wrap(Napi::Env env, std::unique_ptr<faiss::Index> idx) {
  Napi::Object obj = Index::ctor.New({});
  Index::Unwrap(obj)->holder->index = cah_faiss::withFastFp16Scan(std::move(idx));
  return obj;
}

Napi::Value Index::Factory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t d = countArg(info, 0, "factory(d)");
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(env, "factory: index key must be a string");
  std::string key = info[1].As<Napi::String>();
  std::string metric = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "ip";
  faiss::MetricType mt;
  if (metric == "ip") mt = faiss::METRIC_INNER_PRODUCT;
  else if (metric == "l2") mt = faiss::METRIC_L2;
  else throw Napi::Error::New(env, "factory: metric must be ip or l2, got " + metric);
  try {
    std::unique_ptr<faiss::Index> idx(faiss::index_factory(static_cast<int>(d), key.c_str(), mt));
    // IVF...,SQfp16 made here stores the vectors themselves, not their residuals from the centroid:
    // float16 embeddings are then held exactly and searched by our float16 kernel (ivf-sq-fp16.cc).
    if (auto* sq = dynamic_cast<faiss::IndexIVFScalarQuantizer*>(idx.get()); sq && sq->sq.qtype == faiss::ScalarQuantizer::QT_fp16) sq->by_residual = false;
    return wrap(env, std::move(idx));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("faiss index_factory(") + std::to_string(d) + ", \"" + key + "\"): " + e.what());
  }
}

// The memory-mapped inverted lists of an index read with IO_FLAG_MMAP, made safe and fast to search:
// - faiss maps them without checking that the file holds them: a truncated file would read fine,
//   then SIGBUS on the first search that touches the missing pages; it is refused here instead.
// - faiss' OnDiskInvertedLists starts, on every search, threads (32 by default) that read each
//   probed list through before the scan reads it again: the list bytes cross the memory bus twice
//   and the threads are created per query. With the lists in the page cache that is pure loss:
//   1M x 512 IVF2048,Flat at nprobe 104, one client, p50 10.2 -> 6.0 ms, and also faster from a
//   dropped page cache here (back README); the kernel's own read-ahead serves a cold scan, which
//   reads each list front to back. So no prefetch threads.
void prepareMappedLists(faiss::Index* idx, const std::string& path) {
  faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
  if (!ivf) return;
  auto* od = dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists);
  if (!od) return;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path);
  size_t end = 0;
  for (auto& l : od->lists) end = std::max(end, l.offset + l.capacity * (sizeof(idx_t) + od->code_size));
  if (end > static_cast<size_t>(st.st_size) || od->totsize > static_cast<size_t>(st.st_size))
    throw std::runtime_error("truncated index file " + path + ": inverted lists need " + std::to_string(std::max(end, od->totsize)) + " bytes, file has " + std::to_string(st.st_size));
  od->prefetch_nthread = 0;
}

Napi::Value Index::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "read: path must be a string");
  std::string path = info[0].As<Napi::String>();
  bool mmap = info.Length() > 1 && info[1].ToBoolean();
  auto result = std::make_shared<std::unique_ptr<faiss::Index>>();
  auto* job = new Job(
      env,
      [path, mmap, result]() {
        int flags = mmap ? (faiss::IO_FLAG_MMAP | faiss::IO_FLAG_READ_ONLY) : 0;
        result->reset(faiss::read_index(path.c_str(), flags));
        if (mmap) prepareMappedLists(result->get(), path);
      },
      [result](Napi::Env env) -> Napi::Value { return wrap(env, std::move(*result)); });
  job->Queue();
  return job->promise();
}

Napi::Value Index::Train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  int64_t n = countArg(info, 1, "train(n)");
  std::shared_ptr<std::vector<float>> owned;
  const float* x;
  if (info[0].IsObject() && info[0].As<Napi::Object>().InstanceOf(FloatMatrix::ctor.Value())) {
    auto* m = FloatMatrix::Unwrap(info[0].As<Napi::Object>());
    if (m->d != holder->index->d || m->rows < n) throw Napi::RangeError::New(env, "train: FloatMatrix shape does not match n x d");
    owned = m->data;
    x = owned->data();
  } else {
    x = floatsArg(info, 0, static_cast<size_t>(n) * holder->index->d, "train");
  }
  int threads = threadsArg(info, 2);
  auto h = holder;
  auto* job = new Job(env, [h, n, x, threads, owned]() {
    std::unique_lock lock(h->mutex);
    if (!h->index) throw std::runtime_error("faiss index was disposed");
    if (threads) omp_set_num_threads(threads);
    h->index->train(n, x);
  }, nullptr);
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

Napi::Value Index::Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  int64_t n = countArg(info, 1, "add(n)");
  const float* x = floatsArg(info, 0, static_cast<size_t>(n) * holder->index->d, "add");
  int threads = threadsArg(info, 2);
  auto h = holder;
  auto* job = new Job(env, [h, n, x, threads]() {
    std::unique_lock lock(h->mutex);
    if (!h->index) throw std::runtime_error("faiss index was disposed");
    if (!h->index->is_trained) throw std::runtime_error("add: the index is not trained");
    if (threads) omp_set_num_threads(threads);
    h->index->add(n, x);
  }, nullptr);
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

// add_with_ids: ids are given as doubles (exact integers up to 2^53, as search returns them).
// IVF indices (also behind OPQ) take them; Flat and HNSW number vectors by position and refuse.
Napi::Value Index::AddWithIds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  int64_t n = countArg(info, 1, "addWithIds(n)");
  const float* x = floatsArg(info, 0, static_cast<size_t>(n) * holder->index->d, "addWithIds");
  if (info.Length() < 3 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(env, "addWithIds: ids must be a Float64Array");
  auto idsIn = info[2].As<Napi::Float64Array>();
  if (idsIn.ElementLength() != static_cast<size_t>(n))
    throw Napi::RangeError::New(env, "addWithIds: " + std::to_string(idsIn.ElementLength()) + " ids for " + std::to_string(n) + " vectors");
  auto ids = std::make_shared<std::vector<idx_t>>(static_cast<size_t>(n));
  for (size_t i = 0; i < static_cast<size_t>(n); i++) {
    double v = idsIn[i];
    if (!(v >= 0) || v != std::floor(v) || v > 9007199254740991.0)
      throw Napi::RangeError::New(env, "addWithIds: id " + std::to_string(v) + " at position " + std::to_string(i) + " is not a non-negative integer");
    (*ids)[i] = static_cast<idx_t>(v);
  }
  int threads = threadsArg(info, 3);
  auto h = holder;
  auto* job = new Job(env, [h, n, x, ids, threads]() {
    std::unique_lock lock(h->mutex);
    if (!h->index) throw std::runtime_error("faiss index was disposed");
    if (!h->index->is_trained) throw std::runtime_error("addWithIds: the index is not trained");
    if (threads) omp_set_num_threads(threads);
    h->index->add_with_ids(n, x, ids->data());
  }, nullptr);
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

faiss::IndexIVF* ivfOf(faiss::Index* idx) {
  if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) idx = pt->index;
  return dynamic_cast<faiss::IndexIVF*>(idx);
}

// merge_from: moves every entry of `other` into this index (ids + idOffset); `other` is left empty.
// faiss checks that both have the same type, quantizer centroids, code size (and OPQ matrices).
// IVF lists must both be in memory: faiss merges list by list inside an OpenMP loop, where a
// read-only memory-mapped list would throw, and an exception escaping OpenMP aborts the process.
Napi::Value Index::MergeFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(Index::ctor.Value()))
    throw Napi::TypeError::New(env, "mergeFrom: expected a faiss index");
  auto other = Index::Unwrap(info[0].As<Napi::Object>())->holder;
  if (other == holder) throw Napi::Error::New(env, "mergeFrom: cannot merge an index into itself");
  if (!other->index) throw Napi::Error::New(env, "mergeFrom: the other faiss index was disposed");
  int64_t idOffset = info.Length() > 1 && !info[1].IsUndefined() ? countArg(info, 1, "mergeFrom(idOffset)") : 0;
  auto h = holder;
  auto* job = new Job(env, [h, other, idOffset]() {
    std::scoped_lock lock(h->mutex, other->mutex);
    if (!h->index || !other->index) throw std::runtime_error("faiss index was disposed");
    faiss::IndexIVF* a = ivfOf(h->index.get());
    faiss::IndexIVF* b = ivfOf(other->index.get());
    if (a && b && (!dynamic_cast<faiss::ArrayInvertedLists*>(a->invlists) || !dynamic_cast<faiss::ArrayInvertedLists*>(b->invlists)))
      throw std::runtime_error("mergeFrom: both IVF indices must be in memory (read them without mmap)");
    h->index->merge_from(*other->index, idOffset);
    // IndexPreTransform::merge_from empties the inner index of `other` but not its own count
    if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(other->index.get())) pt->ntotal = pt->index->ntotal;
  }, nullptr);
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

Napi::Value Index::Search(const Napi::CallbackInfo& info) { return SearchJob(info, "search", false); }

// faiss' search_and_reconstruct: IVF indices decode the result vectors from the codes the scan has
// just read (list number + offset), so no id lookup; other indices search, then reconstruct(id).
// Rows of `vectors` where the label is -1 are NaN (faiss fills them with 0xff bytes).
Napi::Value Index::SearchAndReconstruct(const Napi::CallbackInfo& info) { return SearchJob(info, "searchAndReconstruct", true); }

// { distances: Float32Array, labels: Float64Array } of a search, built on the JS thread.
Napi::Object searchResult(Napi::Env env, const std::vector<float>& dist, const std::vector<idx_t>& labels) {
  auto d = Napi::Float32Array::New(env, dist.size());
  std::copy(dist.begin(), dist.end(), d.Data());
  // ids as doubles: exact up to 2^53, and -1 (no result) survives
  auto l = Napi::Float64Array::New(env, labels.size());
  for (size_t i = 0; i < labels.size(); i++) l[i] = static_cast<double>(labels[i]);
  Napi::Object r = Napi::Object::New(env);
  r.Set("distances", d);
  r.Set("labels", l);
  return r;
}

// On a pool thread: the index shared-locked (searches run side by side) and checked alive, the
// calling thread's OpenMP threads set, then search, or search_and_reconstruct where `recons` is given.
void searchLocked(Holder& h, int64_t nq, const float* x, int64_t k, int threads, float* dist, idx_t* labels, float* recons) {
  std::shared_lock lock(h.mutex);
  if (!h.index) throw std::runtime_error("faiss index was disposed");
  if (threads) omp_set_num_threads(threads);
  if (recons) h.index->search_and_reconstruct(nq, x, k, dist, labels, recons);
  else h.index->search(nq, x, k, dist, labels);
}

Napi::Value Index::SearchJob(const Napi::CallbackInfo& info, const char* name, bool withVectors) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  const std::string fn(name);
  int64_t nq = countArg(info, 1, (fn + "(nq)").c_str());
  int64_t k = countArg(info, 2, (fn + "(k)").c_str());
  if (k < 1) throw Napi::RangeError::New(env, fn + ": k must be >= 1");
  const float* x = floatsArg(info, 0, static_cast<size_t>(nq) * idx->d, name);
  int threads = threadsArg(info, 3);
  auto h = holder;
  auto dist = std::make_shared<std::vector<float>>(static_cast<size_t>(nq * k));
  auto labels = std::make_shared<std::vector<idx_t>>(static_cast<size_t>(nq * k));
  auto recons = std::make_shared<std::vector<float>>(withVectors ? static_cast<size_t>(nq * k) * idx->d : 0);
  auto* job = new Job(
      env,
      [h, nq, k, x, threads, dist, labels, recons, withVectors]() {
        searchLocked(*h, nq, x, k, threads, dist->data(), labels->data(), withVectors ? recons->data() : nullptr);
      },
      [dist, labels, recons, withVectors](Napi::Env env) -> Napi::Value {
        Napi::Object r = searchResult(env, *dist, *labels);
        if (withVectors) {
          auto v = Napi::Float32Array::New(env, recons->size());
          std::copy(recons->begin(), recons->end(), v.Data());
          r.Set("vectors", v);
        }
        return r;
      });
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

// Positions 0..n-1 of `n` result vectors (rows of `v`, d wide) kept by the back end's near-duplicate
// rule: rows linked when the inner product of their L2-normalised vectors is > threshold; of each
// connected component only the first position is kept (back/knn.ts dedupPositions, same rule).
std::vector<int32_t> dedupKeep(const float* v, size_t n, size_t d, double threshold) {
  std::vector<float> unit(n * d);
  for (size_t r = 0; r < n; r++) {
    double s = 0;
    for (size_t j = 0; j < d; j++) s += static_cast<double>(v[r * d + j]) * v[r * d + j];
    const double inv = s > 0 ? 1 / std::sqrt(s) : 0;
    for (size_t j = 0; j < d; j++) unit[r * d + j] = static_cast<float>(v[r * d + j] * inv);
  }
  std::vector<std::vector<uint32_t>> links(n);
  for (size_t a = 0; a < n; a++) {
    for (size_t b = a + 1; b < n; b++) {
      // faiss' kernel (ours where the CPU has AVX2: distance-kernels.cc), float as the JS path's sgemm
      if (faiss::fvec_inner_product(&unit[a * d], &unit[b * d], d) > threshold) {
        links[a].push_back(static_cast<uint32_t>(b));
        links[b].push_back(static_cast<uint32_t>(a));
      }
    }
  }
  std::vector<int32_t> kept;
  std::vector<uint8_t> seen(n, 0);
  std::vector<uint32_t> stack;
  for (size_t seed = 0; seed < n; seed++) {
    if (seen[seed]) continue;
    seen[seed] = 1;
    kept.push_back(static_cast<int32_t>(seed));
    stack.assign(1, static_cast<uint32_t>(seed));
    while (!stack.empty()) {
      const uint32_t a = stack.back();
      stack.pop_back();
      for (uint32_t b : links[a]) {
        if (!seen[b]) {
          seen[b] = 1;
          stack.push_back(b);
        }
      }
    }
  }
  return kept;
}

// searchAndDedup(x, k, threads, threshold): one query's search_and_reconstruct and the near-duplicate
// rule on its results in the same job, off the JS thread. The result vectors never reach JS: a
// query costs one job and no large arrays (the three jobs and 80 KB arrays per query of the JS path
// showed up as GC and thread switches under load). Results stop at the first -1 label, as in JS.
Napi::Value Index::SearchAndDedup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  int64_t k = countArg(info, 1, "searchAndDedup(k)");
  if (k < 1) throw Napi::RangeError::New(env, "searchAndDedup: k must be >= 1");
  const float* x = floatsArg(info, 0, static_cast<size_t>(idx->d), "searchAndDedup");
  int threads = threadsArg(info, 2);
  if (info.Length() < 4 || !info[3].IsNumber()) throw Napi::TypeError::New(env, "searchAndDedup: threshold must be a number");
  const double threshold = info[3].As<Napi::Number>().DoubleValue();
  const size_t d = static_cast<size_t>(idx->d);
  auto h = holder;
  auto dist = std::make_shared<std::vector<float>>(static_cast<size_t>(k));
  auto labels = std::make_shared<std::vector<idx_t>>(static_cast<size_t>(k));
  auto kept = std::make_shared<std::vector<int32_t>>();
  auto* job = new Job(
      env,
      [h, k, x, d, threads, threshold, dist, labels, kept]() {
        std::vector<float> recons(static_cast<size_t>(k) * d);
        searchLocked(*h, 1, x, k, threads, dist->data(), labels->data(), recons.data());
        size_t n = 0;
        while (n < static_cast<size_t>(k) && (*labels)[n] >= 0) n++;
        *kept = dedupKeep(recons.data(), n, d, threshold);
      },
      [dist, labels, kept](Napi::Env env) -> Napi::Value {
        Napi::Object r = searchResult(env, *dist, *labels);
        auto keep = Napi::Int32Array::New(env, kept->size());
        std::copy(kept->begin(), kept->end(), keep.Data());
        r.Set("keep", keep);
        return r;
      });
  job->keep(info[0]);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

// attachSq8Copy(copyPath, indexPath): see ivf-sq-fp16.cc; resolves to "attached", "built" or
// "unsupported: ...". Takes the index exclusively: no search runs while the copy is made.
Napi::Value Index::AttachSq8Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "attachSq8Copy: expected (copyPath, indexPath)");
  std::string copyPath = info[0].As<Napi::String>(), indexPath = info[1].As<Napi::String>();
  auto h = holder;
  auto status = std::make_shared<std::string>();
  auto* job = new Job(
      env,
      [h, copyPath, indexPath, status]() {
        std::unique_lock lock(h->mutex);
        if (!h->index) throw std::runtime_error("faiss index was disposed");
        *status = cah_faiss::attachSq8Copy(h->index.get(), copyPath, indexPath);
      },
      [status](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *status); });
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

Napi::Value Index::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "write: path must be a string");
  std::string path = info[0].As<Napi::String>();
  auto h = holder;
  auto* job = new Job(env, [h, path]() {
    std::shared_lock lock(h->mutex);
    if (!h->index) throw std::runtime_error("faiss index was disposed");
    faiss::write_index(h->index.get(), path.c_str());
  }, nullptr);
  job->keep(info.This());
  job->Queue();
  return job->promise();
}

Napi::Value Index::SetParameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "setParameters: expected a string like nprobe=16,efSearch=32");
  std::string params = info[0].As<Napi::String>();
  std::unique_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(env, "faiss index is busy (a search, train or add is running)");
  try {
    faiss::ParameterSpace().set_index_parameters(holder->index.get(), params.c_str());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("faiss parameters \"") + params + "\": " + e.what());
  }
  return env.Undefined();
}

// IVF parallel_mode 1 (not a ParameterSpace name in faiss 1.7.3): a search's OpenMP threads share
// the probed lists of each query instead of taking whole queries, so a single query given several
// threads finishes sooner; with one thread it runs exactly as before. Returns whether the index
// is IVF (behind a pre-transform too); other indices are left as they are.
Napi::Value Index::SplitQueriesOverLists(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  bool on = info.Length() < 1 || info[0].ToBoolean();
  std::unique_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(env, "faiss index is busy (a search, train or add is running)");
  faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx);
  if (!ivf) return Napi::Boolean::New(env, false);
  ivf->parallel_mode = on ? 1 : 0;
  return Napi::Boolean::New(env, true);
}

// Training knobs that index_factory leaves at faiss defaults: OPQ iterations and sample, k-means
// iterations and sample cap, polysemous training, HNSW efConstruction.
Napi::Value Index::ConfigureTraining(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "configureTraining: expected an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* k) -> int64_t { return o.Has(k) && o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().Int64Value() : -1; };
  int64_t opqNiter = num("opqNiter"), opqNiterPq = num("opqNiterPq"), opqMaxTrainPoints = num("opqMaxTrainPoints");
  int64_t kmeansNiter = num("kmeansNiter"), maxPointsPerCentroid = num("maxPointsPerCentroid"), efConstruction = num("efConstruction");
  int64_t pqNiter = num("pqNiter");
  bool polysemous = o.Has("polysemousTraining") && o.Get("polysemousTraining").ToBoolean();
  std::unique_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(env, "faiss index is busy");
  if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) {
    for (auto* vt : pt->chain) {
      if (auto* opq = dynamic_cast<faiss::OPQMatrix*>(vt)) {
        if (opqNiter > 0) opq->niter = static_cast<int>(opqNiter);
        if (opqNiterPq > 0) opq->niter_pq = opq->niter_pq_0 = static_cast<int>(opqNiterPq);
        if (opqMaxTrainPoints > 0) opq->max_train_points = static_cast<size_t>(opqMaxTrainPoints);
      }
    }
    idx = pt->index;
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
    if (kmeansNiter > 0) ivf->cp.niter = static_cast<int>(kmeansNiter);
    if (maxPointsPerCentroid > 0) ivf->cp.max_points_per_centroid = static_cast<int>(maxPointsPerCentroid);
    if (auto* hq = dynamic_cast<faiss::IndexHNSW*>(ivf->quantizer)) {
      if (efConstruction > 0) hq->hnsw.efConstruction = static_cast<int>(efConstruction);
    }
    if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(ivf)) {
      ivfpq->do_polysemous_training = polysemous;
      if (pqNiter > 0) ivfpq->pq.cp.niter = static_cast<int>(pqNiter);
    }
  }
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(idx)) {
    if (efConstruction > 0) hnsw->hnsw.efConstruction = static_cast<int>(efConstruction);
  }
  return env.Undefined();
}

Napi::Value Index::Reconstruct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  int64_t i0 = countArg(info, 0, "reconstruct(id)");
  int64_t n = info.Length() > 1 ? countArg(info, 1, "reconstruct(n)") : 1;
  if (i0 + n > idx->ntotal) throw Napi::RangeError::New(env, "reconstruct: ids " + std::to_string(i0) + ".." + std::to_string(i0 + n - 1) + " out of range (ntotal " + std::to_string(idx->ntotal) + ")");
  std::shared_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(env, "faiss index is busy (train or add running)");
  auto out = Napi::Float32Array::New(env, static_cast<size_t>(n * idx->d));
  try {
    idx->reconstruct_n(i0, n, out.Data());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("faiss reconstruct: ") + e.what());
  }
  return out;
}

// sa_decode(sa_encode(x)): what the index's codec keeps of x; null when it has no standalone codec.
Napi::Value Index::CodecRoundTrip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  faiss::Index* idx = live(env);
  int64_t n = countArg(info, 1, "codecRoundTrip(n)");
  const float* x = floatsArg(info, 0, static_cast<size_t>(n) * idx->d, "codecRoundTrip");
  std::shared_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(env, "faiss index is busy");
  try {
    size_t cs = idx->sa_code_size();
    std::vector<uint8_t> codes(cs * n);
    idx->sa_encode(n, x, codes.data());
    auto out = Napi::Float32Array::New(env, static_cast<size_t>(n * idx->d));
    idx->sa_decode(n, codes.data(), out.Data());
    return out;
  } catch (const std::exception&) {
    return env.Null();
  }
}

void describeInto(std::ostringstream& s, const faiss::Index* idx) {
  if (auto* pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
    s << "IndexPreTransform[";
    for (auto* vt : pt->chain) {
      if (auto* opq = dynamic_cast<const faiss::OPQMatrix*>(vt)) s << "OPQMatrix(" << opq->d_in << "->" << opq->d_out << ",M=" << opq->M << ",niter=" << opq->niter << ")";
      else s << "VectorTransform(" << vt->d_in << "->" << vt->d_out << ")";
      s << ",";
    }
    describeInto(s, pt->index);
    s << "]";
    return;
  }
  if (auto* ivf = dynamic_cast<const faiss::IndexIVF*>(idx)) {
    s << (dynamic_cast<const faiss::IndexIVFPQ*>(idx) ? "IndexIVFPQ" : "IndexIVF") << "(nlist=" << ivf->nlist << ",nprobe=" << ivf->nprobe << ",metric=" << metricName(ivf->metric_type) << ",quantizer=";
    describeInto(s, ivf->quantizer);
    s << ")";
    return;
  }
  if (auto* h = dynamic_cast<const faiss::IndexHNSW*>(idx)) {
    s << "IndexHNSW(M=" << h->hnsw.nb_neighbors(1) << ",efSearch=" << h->hnsw.efSearch << ",metric=" << metricName(h->metric_type) << ")";
    return;
  }
  if (dynamic_cast<const faiss::IndexFlat*>(idx)) {
    s << "IndexFlat(metric=" << metricName(idx->metric_type) << ")";
    return;
  }
  s << "Index(metric=" << metricName(idx->metric_type) << ")";
}

Napi::Value Index::Describe(const Napi::CallbackInfo& info) {
  std::ostringstream s;
  describeInto(s, live(info.Env()));
  return Napi::String::New(info.Env(), s.str());
}

Napi::Value Index::Dispose(const Napi::CallbackInfo& info) {
  std::unique_lock lock(holder->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(info.Env(), "faiss index is busy; dispose after its calls settle");
  holder->index.reset();
  return info.Env().Undefined();
}

Napi::Value Index::GetNtotal(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->ntotal)); }
Napi::Value Index::GetD(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), live(info.Env())->d); }
Napi::Value Index::GetMetric(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), metricName(live(info.Env())->metric_type)); }
Napi::Value Index::GetIsTrained(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), live(info.Env())->is_trained); }

Napi::Object Index::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "FaissIndex", {
      StaticMethod<&Index::Factory>("factory"),
      StaticMethod<&Index::Read>("read"),
      InstanceMethod<&Index::Train>("train"),
      InstanceMethod<&Index::Add>("add"),
      InstanceMethod<&Index::AddWithIds>("addWithIds"),
      InstanceMethod<&Index::MergeFrom>("mergeFrom"),
      InstanceMethod<&Index::Search>("search"),
      InstanceMethod<&Index::SearchAndReconstruct>("searchAndReconstruct"),
      InstanceMethod<&Index::SearchAndDedup>("searchAndDedup"),
      InstanceMethod<&Index::AttachSq8Copy>("attachSq8Copy"),
      InstanceMethod<&Index::Write>("write"),
      InstanceMethod<&Index::SetParameters>("setParameters"),
      InstanceMethod<&Index::SplitQueriesOverLists>("splitQueriesOverLists"),
      InstanceMethod<&Index::ConfigureTraining>("configureTraining"),
      InstanceMethod<&Index::Reconstruct>("reconstruct"),
      InstanceMethod<&Index::CodecRoundTrip>("codecRoundTrip"),
      InstanceMethod<&Index::Describe>("describe"),
      InstanceMethod<&Index::Dispose>("dispose"),
      InstanceAccessor<&Index::GetNtotal>("ntotal"),
      InstanceAccessor<&Index::GetD>("d"),
      InstanceAccessor<&Index::GetMetric>("metric"),
      InstanceAccessor<&Index::GetIsTrained>("isTrained"),
  });
  ctor = Napi::Persistent(f);
  ctor.SuppressDestruct();
  exports.Set("FaissIndex", f);
  return exports;
}

Napi::Value SetInterrupt(const Napi::CallbackInfo& info) {
  g_interrupt.store(info.Length() > 0 && info[0].ToBoolean());
  return info.Env().Undefined();
}

Napi::Value SetBlasThreads(const Napi::CallbackInfo& info) {
  int n = threadsArg(info, 0);
  if (n > 0) openblas_set_num_threads(n);
  return info.Env().Undefined();
}

Napi::Value MaxThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), omp_get_max_threads()); }

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  faiss::InterruptCallback::instance.reset(new FlagInterrupt());
  // faiss parallelises with OpenMP itself; OpenBLAS threads on top only oversubscribe the cores
  // (stack-notes: PQ training 12 s -> 7 s with one BLAS thread).
  openblas_set_num_threads(1);
  Index::Init(env, exports);
  FloatMatrix::Init(env, exports);
  exports.Set("setInterrupt", Napi::Function::New(env, SetInterrupt));
  exports.Set("setBlasThreads", Napi::Function::New(env, SetBlasThreads));
  exports.Set("maxThreads", Napi::Function::New(env, MaxThreads));
  exports.Set("distanceKernels", Napi::String::New(env, cah_faiss::distanceKernels()));
  exports.Set("fastFp16Scan", Napi::Boolean::New(env, cah_faiss::fastFp16Scan()));
  exports.Set("faissVersion", Napi::String::New(env, std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." + std::to_string(FAISS_VERSION_PATCH)));
  return exports;
}

}  // namespace

NODE_API_MODULE(faiss, InitModule)
