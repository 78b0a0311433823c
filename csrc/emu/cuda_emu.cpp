// Runtime of the CUDA execution emulator (see cuda_emu.h and docs/CUDA_TESTING.md).
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// The fiber stack switch: a few instructions of x86-64 assembly; elsewhere, or with CET shadow
// stacks possible (a `ret` onto a new stack would not match the shadow stack), ucontext.
#if defined(__x86_64__) && !defined(__CET__)
#define FRCNN_EMU_ASM_SWITCH 1
#else
#define FRCNN_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define FRCNN_EMU_TSAN 1  // TSan sees races between OS threads: no fibers
#else
#define FRCNN_EMU_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
// Tell ASan about each stack switch (and clean a reused fiber stack's shadow).
#define FRCNN_EMU_START_SWITCH(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define FRCNN_EMU_FINISH_SWITCH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#define FRCNN_EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define FRCNN_EMU_START_SWITCH(save, bottom, size) ((void)0)
#define FRCNN_EMU_FINISH_SWITCH(save, bottom, size) ((void)0)
#define FRCNN_EMU_UNPOISON(p, n) ((void)0)
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace frcnn_emu {
namespace {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 2147483647u;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // without the opt-in attribute
constexpr unsigned char kGarbage = 0xA5;

Mode initial_mode() {
  if (FRCNN_EMU_TSAN) return kThreads;
  const char* env = std::getenv("FRCNN_CUDA_EMU_MODE");
  if (env != nullptr && std::strcmp(env, "threads") == 0) return kThreads;
  return kFibers;
}

std::atomic<int> g_mode{initial_mode()};
std::mutex g_launch_mutex;  // one launch at a time: static __shared__ arrays are process-wide

struct LastError {
  cudaError_t err = cudaSuccess;
  std::string message;
};
thread_local LastError t_error;

void record(cudaError_t err, const std::string& msg) {
  if (t_error.err == cudaSuccess) t_error.err = err;  // the first error of a series wins
  t_error.message = msg;
}

std::string where(const LaunchConfig& cfg) {
  std::ostringstream s;
  const char* base = std::strrchr(cfg.file, '/');
  s << "launch of " << cfg.kernel << " at " << (base ? base + 1 : cfg.file) << ":" << cfg.line;
  return s.str();
}

const char* basename_of(const char* f) {
  const char* b = std::strrchr(f, '/');
  return b ? b + 1 : f;
}

// State of the block being run, seen by __syncthreads and FRCNN_DYNAMIC_SHARED.
struct Block;
thread_local Block* t_block = nullptr;
thread_local unsigned t_linear = 0;  // linear thread index within the block (for messages)

struct Site {
  const char* file = nullptr;
  int line = 0;
  bool same(const Site& o) const {
    return line == o.line && (file == o.file || std::strcmp(file, o.file) == 0);
  }
};

struct Block {
  const LaunchConfig* cfg;
  unsigned nthreads;
  std::unique_ptr<unsigned char[]> shared;
  std::string divergence;  // first report, empty if none

  void report_divergence(const Site& a, unsigned ta, const Site& b, unsigned tb) {
    if (!divergence.empty()) return;
    std::ostringstream s;
    s << where(*cfg) << ": __syncthreads reached from different source lines in block ("
      << blockIdx.x << "," << blockIdx.y << "," << blockIdx.z << "): thread " << ta << " at "
      << basename_of(a.file) << ":" << a.line << ", thread " << tb << " at "
      << basename_of(b.file) << ":" << b.line;
    divergence = s.str();
  }

  // --- kThreads: one OS thread per CUDA thread. Arrivals are counted under a mutex; the last
  // one bumps `generation` (release) and wakes the waiters (futex, no thundering herd on the
  // mutex). ThreadSanitizer understands both, so the barrier orders the accesses around it.
  std::mutex m;
  std::atomic<uint32_t> generation{0};
  unsigned live = 0, arrived = 0;
  Site first_site;
  unsigned first_thread = 0;

  void release_locked() {
    arrived = 0;
    generation.fetch_add(1, std::memory_order_release);
    generation.notify_all();
  }
  void barrier_wait(const Site& site) {
    uint32_t g;
    {
      std::lock_guard<std::mutex> lk(m);
      g = generation.load(std::memory_order_relaxed);
      if (arrived == 0) {
        first_site = site;
        first_thread = t_linear;
      } else if (!site.same(first_site)) {
        report_divergence(first_site, first_thread, site, t_linear);
      }
      if (++arrived == live) {
        release_locked();
        return;
      }
    }
    while (generation.load(std::memory_order_acquire) == g)
      generation.wait(g, std::memory_order_acquire);
  }
  void drop_out() {
    std::lock_guard<std::mutex> lk(m);
    --live;
    if (arrived > 0 && arrived == live) release_locked();
  }

  // --- kFibers: the scheduler's view.
  struct Fiber {
    void* sp = nullptr;
    void* fake_stack = nullptr;  // ASan's bookkeeping while switched out
    bool done = false;
    Site site;
#if !FRCNN_EMU_ASM_SWITCH
    ucontext_t uc;
#endif
  };
  std::vector<Fiber> fibers;
  unsigned current = 0;
};

void set_builtins(const LaunchConfig& cfg, unsigned linear) {
  blockDim = cfg.block;
  gridDim = cfg.grid;
  threadIdx.x = linear % cfg.block.x;
  threadIdx.y = (linear / cfg.block.x) % cfg.block.y;
  threadIdx.z = linear / (cfg.block.x * cfg.block.y);
  t_linear = linear;
}

// ------------------------------------------------------------------------------- threads mode
void run_block_threads(Block& blk, KernelBody body, uint3 bidx) {
  blk.live = blk.nthreads;
  std::vector<std::thread> threads;
  threads.reserve(blk.nthreads);
  for (unsigned t = 0; t < blk.nthreads; ++t) {
    threads.emplace_back([&blk, body, bidx, t] {
      t_block = &blk;
      blockIdx = bidx;
      set_builtins(*blk.cfg, t);
      body.fn(body.ctx);
      blk.drop_out();
      t_block = nullptr;
    });
  }
  for (auto& th : threads) th.join();
}

// -------------------------------------------------------------------------------- fiber mode
constexpr size_t kFiberStack = 256 * 1024;

struct Stack {
  unsigned char* base = nullptr;  // lowest address (a guard page)
  size_t size = 0;
};

struct Scheduler {
  void* sp = nullptr;  // saved stack pointer of the scheduler while a fiber runs
  void* fake_stack = nullptr;
  const void* stack_bottom = nullptr;  // the scheduler's stack (ASan), learnt by the fibers
  size_t stack_size = 0;
#if !FRCNN_EMU_ASM_SWITCH
  ucontext_t uc;
#endif
  Block* blk = nullptr;
  KernelBody body{};
  std::vector<Stack> stacks;  // reused across blocks and launches

  ~Scheduler() {
    for (auto& s : stacks) munmap(s.base, s.size);
  }
  Stack& stack(unsigned i) {
    while (stacks.size() <= i) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      void* p = mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
      if (p == MAP_FAILED) {
        std::fprintf(stderr, "frcnn_emu: cannot map a fiber stack\n");
        std::abort();
      }
      mprotect(p, page, PROT_NONE);  // overflow faults instead of corrupting the next stack
      stacks.push_back(Stack{static_cast<unsigned char*>(p), kFiberStack});
    }
    return stacks[i];
  }
};
thread_local Scheduler t_sched;

#if FRCNN_EMU_ASM_SWITCH
// switch_stack(save, next): saves the callee-saved registers on the current stack, stores the
// stack pointer in *save, continues on `next` (a stack saved the same way).
extern "C" void frcnn_emu_switch_stack(void** save, void* next);
asm(R"(
    .text
    .p2align 4
    .type frcnn_emu_switch_stack,@function
frcnn_emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size frcnn_emu_switch_stack,.-frcnn_emu_switch_stack
)");
#endif

void to_scheduler(bool finished = false) {
  Block& blk = *t_sched.blk;
  Block::Fiber& f = blk.fibers[blk.current];
  FRCNN_EMU_START_SWITCH(finished ? nullptr : &f.fake_stack, t_sched.stack_bottom,
                         t_sched.stack_size);
#if FRCNN_EMU_ASM_SWITCH
  frcnn_emu_switch_stack(&blk.fibers[blk.current].sp, t_sched.sp);
#else
  swapcontext(&blk.fibers[blk.current].uc, &t_sched.uc);
#endif
  FRCNN_EMU_FINISH_SWITCH(f.fake_stack, nullptr, nullptr);
}

[[noreturn]] void fiber_main() {
  FRCNN_EMU_FINISH_SWITCH(nullptr, &t_sched.stack_bottom, &t_sched.stack_size);
  Block& blk = *t_sched.blk;
  t_sched.body.fn(t_sched.body.ctx);
  blk.fibers[blk.current].done = true;
  to_scheduler(/*finished=*/true);
  std::abort();  // a finished fiber is never resumed
}

void fiber_resume(Block& blk, unsigned i) {
  blk.current = i;
  set_builtins(*blk.cfg, i);
  const Stack& s = t_sched.stacks[i];
  FRCNN_EMU_START_SWITCH(&t_sched.fake_stack, s.base, s.size);
#if FRCNN_EMU_ASM_SWITCH
  frcnn_emu_switch_stack(&t_sched.sp, blk.fibers[i].sp);
#else
  swapcontext(&t_sched.uc, &blk.fibers[i].uc);
#endif
  FRCNN_EMU_FINISH_SWITCH(t_sched.fake_stack, nullptr, nullptr);
}

void run_block_fibers(Block& blk, KernelBody body) {
  const unsigned n = blk.nthreads;
  blk.fibers.assign(n, Block::Fiber{});
  t_sched.blk = &blk;
  t_sched.body = body;
  for (unsigned i = 0; i < n; ++i) {
    Stack& s = t_sched.stack(i);
    FRCNN_EMU_UNPOISON(s.base, s.size);  // frames of an earlier fiber on this stack
#if FRCNN_EMU_ASM_SWITCH
    // Initial frame: six zeroed callee-saved registers, then fiber_main as the return address
    // at a 16-byte aligned slot, so fiber_main starts with the ABI's stack alignment.
    auto top = reinterpret_cast<uintptr_t>(s.base + s.size) & ~uintptr_t(15);
    auto* slot = reinterpret_cast<void**>(top - 16);
    slot[0] = reinterpret_cast<void*>(&fiber_main);
    slot[1] = nullptr;
    void** regs = slot - 6;
    for (int k = 0; k < 6; ++k) regs[k] = nullptr;
    blk.fibers[i].sp = regs;
#else
    getcontext(&blk.fibers[i].uc);
    blk.fibers[i].uc.uc_stack.ss_sp = s.base;
    blk.fibers[i].uc.uc_stack.ss_size = s.size;
    blk.fibers[i].uc.uc_link = nullptr;
    makecontext(&blk.fibers[i].uc, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
  }
  unsigned live = n;
  for (unsigned phase = 0; live > 0; ++phase) {
    const bool reverse = phase % 2 == 1;
    Site first;
    unsigned first_thread = 0;
    bool have_first = false;
    for (unsigned k = 0; k < n; ++k) {
      const unsigned i = reverse ? n - 1 - k : k;
      if (blk.fibers[i].done) continue;
      fiber_resume(blk, i);
      if (blk.fibers[i].done) {
        --live;
        continue;
      }
      if (!have_first) {
        first = blk.fibers[i].site;
        first_thread = i;
        have_first = true;
      } else if (!blk.fibers[i].site.same(first)) {
        blk.report_divergence(first, first_thread, blk.fibers[i].site, i);
      }
    }
  }
  t_sched.blk = nullptr;
}

}  // namespace

// ------------------------------------------------------------------------------------ public
void set_mode(Mode m) { g_mode.store(FRCNN_EMU_TSAN ? kThreads : m); }
Mode mode() { return static_cast<Mode>(g_mode.load()); }

void syncthreads(const char* file, int line) {
  Block* blk = t_block;
  if (blk == nullptr) {
    std::fprintf(stderr, "frcnn_emu: __syncthreads outside a kernel launch (%s:%d)\n", file,
                 line);
    std::abort();
  }
  const Site site{file, line};
  if (mode() == kThreads) {
    blk->barrier_wait(site);
  } else {
    blk->fibers[blk->current].site = site;
    to_scheduler();
  }
}

void* dynamic_shared() { return t_block != nullptr ? t_block->shared.get() : nullptr; }

void run(const LaunchConfig& cfg, KernelBody body) {
  const dim3 g = cfg.grid, b = cfg.block;
  std::ostringstream bad;
  cudaError_t err = cudaSuccess;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) {
    err = cudaErrorInvalidConfiguration;
    bad << "a zero grid or block dimension";
  } else if (threads > kMaxThreadsPerBlock || b.z > kMaxBlockZ) {
    err = cudaErrorInvalidConfiguration;
    bad << "block (" << b.x << "," << b.y << "," << b.z << ") = " << threads
        << " threads, CUDA allows at most " << kMaxThreadsPerBlock << " (and block.z <= "
        << kMaxBlockZ << ")";
  } else if (g.x > kMaxGridX || g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    err = cudaErrorInvalidConfiguration;
    bad << "grid (" << g.x << "," << g.y << "," << g.z << "): CUDA allows grid.x <= "
        << kMaxGridX << ", grid.y and grid.z <= " << kMaxGridYZ;
  } else if (cfg.shared_bytes > kMaxSharedBytes) {
    err = cudaErrorInvalidValue;
    bad << cfg.shared_bytes << " bytes of dynamic shared memory, CUDA allows " << kMaxSharedBytes
        << " without opting in";
  }
  if (err != cudaSuccess) {
    record(err, "frcnn_emu: " + where(cfg) + ": " + bad.str());
    return;
  }

  std::lock_guard<std::mutex> lock(g_launch_mutex);
  const Mode m = mode();
  Block* const saved_block = t_block;  // fiber mode runs on this thread
  std::string divergence;
  for (unsigned z = 0; z < g.z; ++z) {
    for (unsigned y = 0; y < g.y; ++y) {
      for (unsigned x = 0; x < g.x; ++x) {
        Block blk;
        blk.cfg = &cfg;
        blk.nthreads = static_cast<unsigned>(threads);
        // Exactly the launch's size (new[0] for none), so ASan flags any overrun; garbage-filled.
        blk.shared.reset(new unsigned char[cfg.shared_bytes]);
        std::memset(blk.shared.get(), kGarbage, cfg.shared_bytes);
        const uint3 bidx{x, y, z};
        if (m == kThreads) {
          run_block_threads(blk, body, bidx);
        } else {
          t_block = &blk;
          blockIdx = bidx;
          run_block_fibers(blk, body);
        }
        if (divergence.empty() && !blk.divergence.empty()) divergence = blk.divergence;
      }
    }
  }
  t_block = saved_block;
  // A divergent barrier is undefined behaviour on a GPU (a hang or wrong results).
  if (!divergence.empty()) record(cudaErrorLaunchFailure, "frcnn_emu: " + divergence);
}

cudaError_t get_last_error() {
  const cudaError_t e = t_error.err;
  t_error.err = cudaSuccess;
  return e;
}

cudaError_t peek_last_error() { return t_error.err; }

const char* last_error_message() { return t_error.message.c_str(); }

const char* error_string(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
  }
}

}  // namespace frcnn_emu
