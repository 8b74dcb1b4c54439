// hostemu_launcher.cpp -- runs CUDA kernels compiled by g++ against cuda_host.h.
//
// Not compiled on its own: hostemu.py generates one translation unit per .cu
//
//     #include "cuda_host.h"
//     #include "hostemu_launcher.cpp"
//     <the .cu source>
//     namespace hostemu { const Entry entries[] = { make_entry("k<float>", &k<float>), ... }; }
//
// and builds it into a shared library exporting a small C API (bottom of this
// file) that Python drives through ctypes, like cuLaunchKernel: grid, block,
// dynamic shared bytes and `void** args`. Each kernel's parameter types are
// derived at compile time from its function-pointer type and exported as
// strings ("const float*", "long long", ...), so Python can refuse arguments
// of the wrong C type.
//
// Execution
// ---------
// Blocks are handed out (in the requested order) to one or more OS workers.
// A worker runs a block in one of two modes:
//
//  * loop mode: a plain loop over the block's threads, each one calling the
//    kernel to completion. Any barrier or warp collective fails the launch.
//  * fiber mode: one fiber (own stack, own saved registers) per CUDA thread,
//    all on the worker's OS thread, driven by a scheduler that runs in
//    "passes": it resumes every ready fiber, in the requested thread order,
//    until that fiber blocks at a barrier/warp collective or returns. When no
//    fiber is ready it releases the warp collectives whose lanes have all
//    arrived (computing shuffle/ballot results), then the block barrier once
//    every thread waits at the same __syncthreads call site. Threads that
//    exited while others wait, barriers at different call sites, warp
//    collectives with missing lanes and any other state with nothing left to
//    run are reported as errors naming the threads and source lines -- a
//    divergent barrier fails the launch instead of hanging.
//
// The context switch is about twenty instructions of x86-64 assembly saving the
// callee-saved registers, MXCSR and the x87 control word on the old stack and
// popping them from the new one (ucontext elsewhere, or with
// -DHOSTEMU_UCONTEXT). Stacks are mmap'd with a guard page and kept per
// worker across launches. Under AddressSanitizer the switches are annotated
// with __sanitizer_{start,finish}_switch_fiber.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define HOSTEMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define HOSTEMU_ASAN 0
#endif

#if !defined(__x86_64__) && !defined(HOSTEMU_UCONTEXT)
#define HOSTEMU_UCONTEXT 1
#endif
#if defined(HOSTEMU_UCONTEXT)
#include <ucontext.h>
#endif

#ifndef HOSTEMU_STACK_SIZE
#if HOSTEMU_ASAN
#define HOSTEMU_STACK_SIZE (1024 * 1024)
#else
#define HOSTEMU_STACK_SIZE (256 * 1024)
#endif
#endif

// Largest dynamic shared memory a launch may ask for (H100 opt-in maximum);
// hostemu.py applies CUDA's 48 KiB default unless told otherwise.
#define HOSTEMU_MAX_DYN_SMEM (227 * 1024)
#define HOSTEMU_SMEM_GUARD 256

#if !defined(HOSTEMU_UCONTEXT)
extern "C" void hostemu_ctx_switch(void** save_sp, void* load_sp);
extern "C" void hostemu_ctx_start();
asm(R"(
    .text
    .p2align 4
    .globl hostemu_ctx_switch
    .hidden hostemu_ctx_switch
    .type hostemu_ctx_switch, @function
hostemu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size hostemu_ctx_switch, .-hostemu_ctx_switch

    .p2align 4
    .globl hostemu_ctx_start
    .hidden hostemu_ctx_start
    .type hostemu_ctx_start, @function
hostemu_ctx_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size hostemu_ctx_start, .-hostemu_ctx_start
)");
#endif

namespace hostemu {

// ------------------------------------------------------------ type names
struct TName {
    char s[120]{};
    unsigned n = 0;
    constexpr void add(std::string_view v) {
        for (char c : v)
            if (n + 1 < sizeof(s)) s[n++] = c;
    }
};

template <class T>
constexpr std::string_view raw_type_name() {
    std::string_view p = __PRETTY_FUNCTION__;  // "... [with T = Foo; ...]"
    auto a = p.find("T = ");
    if (a == std::string_view::npos) return "?";
    a += 4;
    auto e = p.find_first_of(";]", a);
    return p.substr(a, e - a);
}

template <class T>
constexpr TName tname() {
    TName r;
    if constexpr (std::is_pointer_v<T>) {
        r = tname<std::remove_cv_t<std::remove_pointer_t<T>>>();
        if constexpr (std::is_const_v<std::remove_pointer_t<T>>) {
            TName c;
            c.add("const ");
            c.add(std::string_view(r.s, r.n));
            r = c;
        }
        r.add("*");
    } else if constexpr (std::is_same_v<T, void>) r.add("void");
    else if constexpr (std::is_same_v<T, bool>) r.add("bool");
    else if constexpr (std::is_same_v<T, char>) r.add("char");
    else if constexpr (std::is_same_v<T, signed char>) r.add("signed char");
    else if constexpr (std::is_same_v<T, unsigned char>) r.add("unsigned char");
    else if constexpr (std::is_same_v<T, short>) r.add("short");
    else if constexpr (std::is_same_v<T, unsigned short>) r.add("unsigned short");
    else if constexpr (std::is_same_v<T, int>) r.add("int");
    else if constexpr (std::is_same_v<T, unsigned int>) r.add("unsigned int");
    else if constexpr (std::is_same_v<T, long>) r.add("long");
    else if constexpr (std::is_same_v<T, unsigned long>) r.add("unsigned long");
    else if constexpr (std::is_same_v<T, long long>) r.add("long long");
    else if constexpr (std::is_same_v<T, unsigned long long>) r.add("unsigned long long");
    else if constexpr (std::is_same_v<T, float>) r.add("float");
    else if constexpr (std::is_same_v<T, double>) r.add("double");
    else {
        r.add("struct ");
        r.add(raw_type_name<T>());
    }
    return r;
}

// -------------------------------------------------------------- registry
using AnyFn = void (*)();
using Invoker = void (*)(AnyFn, void**);

struct Entry {
    const char* name;
    AnyFn fn;
    Invoker invoke;
    unsigned nparams;
    const TName* types;
    const unsigned long long* sizes;
};

template <class F>
struct Sig;
template <class... A>
struct Sig<void (*)(A...)> {
    static constexpr std::array<TName, sizeof...(A)> types{tname<A>()...};
    static constexpr std::array<unsigned long long, sizeof...(A)> sizes{sizeof(A)...};
    template <std::size_t... I>
    static void call(AnyFn fn, void** args, std::index_sequence<I...>) {
        reinterpret_cast<void (*)(A...)>(fn)(*static_cast<std::remove_cv_t<A>*>(args[I])...);
    }
    static void invoke(AnyFn fn, void** args) { call(fn, args, std::index_sequence_for<A...>{}); }
};

template <class... A>
Entry make_entry(const char* name, void (*fn)(A...)) {
    using S = Sig<void (*)(A...)>;
    return Entry{name, reinterpret_cast<AnyFn>(fn), &S::invoke, (unsigned)sizeof...(A), S::types.data(), S::sizes.data()};
}

extern const Entry entries[];
extern const int entry_count;

// ----------------------------------------------------------------- state
struct Error {
    std::string msg;
};

enum class St : unsigned char { Ready, Block, Warp, Done, Failed };

struct Fiber {
#if defined(HOSTEMU_UCONTEXT)
    ucontext_t uc;
#else
    void* sp = nullptr;
#endif
    char* stack = nullptr;  // usable stack (above the guard page)
    std::size_t stack_size = 0;
    void* asan_fake = nullptr;
    unsigned lin = 0;
    uint3 tid{0, 0, 0};
    St state = St::Done;
    // block barrier
    int bop = 0, pred = 0;
    const char* file = "";
    unsigned line = 0;
    // warp collective
    unsigned wmask = 0;
    int wop = 0, wparam = 0, wwidth = 32;
    std::uint64_t wbits = 0, wres = 0;
};

struct Launch {
    AnyFn fn;
    Invoker invoke;
    void** args;
    dim3 grid, block;
    unsigned nthreads;
    unsigned long long nblocks;
    std::size_t shmem;
    bool fibers;
    std::vector<unsigned> thread_order;
    std::vector<unsigned long long> block_perm;  // shuffled order only
    int order;
    std::atomic<unsigned long long> next{0};  // blocks handed out so far
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string err;
    void fail(const std::string& m) {
        std::lock_guard<std::mutex> g(mu);
        if (!failed.load()) {
            err = m;
            failed.store(true);
        }
    }
    unsigned long long block_at(unsigned long long i) const {
        if (order == 1) return nblocks - 1 - i;
        if (order == 2) return block_perm[i];
        return i;
    }
};

// Per-OS-thread resources, reused across launches.
struct Pool {
    std::vector<Fiber> fibers;
    unsigned char* smem = nullptr;
    bool stacks_dirty = false;  // a block was abandoned mid-way (ASan shadow)
    Pool() {
        std::size_t bytes = HOSTEMU_MAX_DYN_SMEM + HOSTEMU_SMEM_GUARD;
        smem = static_cast<unsigned char*>(std::aligned_alloc(256, (bytes + 255) / 256 * 256));
    }
    ~Pool() {
        for (Fiber& f : fibers)
            if (f.stack) munmap(f.stack - sysconf(_SC_PAGESIZE), f.stack_size + sysconf(_SC_PAGESIZE));
        std::free(smem);
    }
    bool ensure(unsigned n, std::string& err) {
        std::size_t page = sysconf(_SC_PAGESIZE);
        std::size_t size = (HOSTEMU_STACK_SIZE + page - 1) / page * page;
        if (fibers.size() < n) fibers.resize(n);
        for (unsigned i = 0; i < n; ++i) {
            Fiber& f = fibers[i];
            if (f.stack) continue;
            void* m = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) {
                err = "hostemu: cannot map fiber stacks";
                return false;
            }
            mprotect(m, page, PROT_NONE);  // guard page: a stack overflow faults
            f.stack = static_cast<char*>(m) + page;
            f.stack_size = size;
        }
        return true;
    }
};
inline thread_local std::unique_ptr<Pool> tls_pool;

struct Worker {
    Launch* L = nullptr;
    Pool* pool = nullptr;
    Fiber* cur = nullptr;
    bool fibers = false;
#if defined(HOSTEMU_UCONTEXT)
    ucontext_t sched_uc;
#else
    void* sched_sp = nullptr;
#endif
    const void* sched_stack_lo = nullptr;
    std::size_t sched_stack_size = 0;
    void* sched_fake = nullptr;
    int block_result = 0;
    bool block_failed = false;
    std::string block_err;
};
inline thread_local Worker* cur_worker = nullptr;

inline std::string where(const char* file, unsigned line) {
    std::string f = file ? file : "?";
    auto s = f.find_last_of('/');
    if (s != std::string::npos) f = f.substr(s + 1);
    return f + ":" + std::to_string(line);
}
inline std::string tid_str(uint3 t) {
    return "(" + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}
inline uint3 lin2tid(unsigned i, dim3 b) { return uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)}; }

// --------------------------------------------------------- context switch
inline void asan_start(void** save, const void* lo, std::size_t size) {
#if HOSTEMU_ASAN
    __sanitizer_start_switch_fiber(save, lo, size);
#else
    (void)save, (void)lo, (void)size;
#endif
}
inline void asan_finish(void* save, const void** lo, std::size_t* size) {
#if HOSTEMU_ASAN
    __sanitizer_finish_switch_fiber(save, lo, size);
#else
    (void)save, (void)lo, (void)size;
#endif
}

[[noreturn]] void fiber_main(Fiber* f);

#if defined(HOSTEMU_UCONTEXT)
inline void fiber_main_uc() { fiber_main(cur_worker->cur); }
inline void ctx_init(Fiber& f) {
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = f.stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main_uc, 0);
}
#else
inline void ctx_init(Fiber& f) {
    auto top = (reinterpret_cast<std::uintptr_t>(f.stack) + f.stack_size) & ~std::uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = reinterpret_cast<void*>(&hostemu_ctx_start);  // return address of the first switch
    *--sp = nullptr;                                        // rbp
    *--sp = nullptr;                                        // rbx
    *--sp = &f;                                             // r12: argument
    *--sp = reinterpret_cast<void*>(&fiber_main);           // r13: entry
    *--sp = nullptr;                                        // r14
    *--sp = nullptr;                                        // r15
    std::uint32_t csr[2] = {0, 0};
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(*reinterpret_cast<std::uint16_t*>(&csr[1])));
    void* packed;
    std::memcpy(&packed, csr, sizeof(packed));
    *--sp = packed;  // MXCSR, x87 control word
    f.sp = sp;
}
#endif

// Scheduler -> fiber.
inline void resume(Worker& w, Fiber& f) {
    w.cur = &f;
    threadIdx = f.tid;
    asan_start(&w.sched_fake, f.stack, f.stack_size);
#if defined(HOSTEMU_UCONTEXT)
    swapcontext(&w.sched_uc, &f.uc);
#else
    hostemu_ctx_switch(&w.sched_sp, f.sp);
#endif
    asan_finish(w.sched_fake, nullptr, nullptr);
}

// Fiber -> scheduler. `exiting`: the fiber will never be resumed.
inline void yield(Worker& w, Fiber& f, bool exiting) {
    asan_start(exiting ? nullptr : &f.asan_fake, w.sched_stack_lo, w.sched_stack_size);
#if defined(HOSTEMU_UCONTEXT)
    swapcontext(&f.uc, &w.sched_uc);
#else
    hostemu_ctx_switch(&f.sp, w.sched_sp);
#endif
    asan_finish(f.asan_fake, nullptr, nullptr);
}

[[noreturn]] void fiber_main(Fiber* f) {
    Worker& w = *cur_worker;
    asan_finish(nullptr, &w.sched_stack_lo, &w.sched_stack_size);
    w.L->invoke(w.L->fn, w.L->args);
    f->state = St::Done;
    yield(w, *f, true);
    std::abort();  // never resumed
}

// A fatal error raised inside a fiber: record it, park the fiber for good.
[[noreturn]] inline void fiber_fail(Worker& w, const std::string& msg) {
    Fiber& f = *w.cur;
    if (!w.block_failed) {
        w.block_failed = true;
        w.block_err = "thread " + tid_str(f.tid) + ": " + msg;
    }
    f.state = St::Failed;
    yield(w, f, true);
    std::abort();
}

// ------------------------------------------------ collectives (header hooks)
inline std::string loop_mode_msg(const char* what, const std::source_location& loc) {
    return std::string(what) + " at " + where(loc.file_name(), loc.line()) +
           " needs fiber mode, but the kernel was launched in loop mode (pass mode='fibers')";
}

int block_sync(int op, int pred, const std::source_location& loc) {
    Worker* w = cur_worker;
    if (!w) std::abort();
    if (!w->fibers) throw Error{loop_mode_msg("__syncthreads", loc)};
    Fiber& f = *w->cur;
    f.state = St::Block;
    f.bop = op;
    f.pred = pred != 0;
    f.file = loc.file_name();
    f.line = loc.line();
    yield(*w, f, false);
    return w->block_result;
}

std::uint64_t warp_op(unsigned mask, int op, std::uint64_t bits, int param, int width, const std::source_location& loc) {
    Worker* w = cur_worker;
    if (!w) std::abort();
    if (!w->fibers) throw Error{loop_mode_msg("warp collective", loc)};
    if (width < 1 || width > 32 || (width & (width - 1)))
        fiber_fail(*w, "warp shuffle width " + std::to_string(width) + " is not a power of 2 in [1, 32] at " +
                           where(loc.file_name(), loc.line()));
    Fiber& f = *w->cur;
    f.state = St::Warp;
    f.wmask = mask;
    f.wop = op;
    f.wbits = bits;
    f.wparam = param;
    f.wwidth = width;
    f.file = loc.file_name();
    f.line = loc.line();
    yield(*w, f, false);
    return f.wres;
}

unsigned active_mask(const std::source_location& loc) {
    Worker* w = cur_worker;
    if (!w) std::abort();
    if (!w->fibers) throw Error{loop_mode_msg("__activemask", loc)};
    unsigned lin = w->cur->lin, base = lin / 32 * 32, n = w->L->nthreads, m = 0;
    for (unsigned l = 0; l < 32 && base + l < n; ++l)
        if (w->pool->fibers[base + l].state != St::Done) m |= 1u << l;
    return m;
}

void* dyn_smem() {
    Worker* w = cur_worker;
    return w ? w->pool->smem : nullptr;
}

[[noreturn]] void trap(const char* what, const std::source_location& loc) {
    std::string msg = std::string(what) + " at " + where(loc.file_name(), loc.line());
    Worker* w = cur_worker;
    if (w && w->fibers) fiber_fail(*w, msg);
    throw Error{msg};
}

// ------------------------------------------------------------- scheduler
inline const char* warp_op_name(int op) {
    static const char* names[] = {"__shfl_sync",  "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync",     "__all_sync",       "__syncwarp"};
    return (op >= 0 && op < 8) ? names[op] : "warp op";
}

// Release warp `wi`'s collectives whose lanes have all arrived. Returns false on error.
inline bool release_warp(Worker& w, unsigned wi, bool& released) {
    std::vector<Fiber>& F = w.pool->fibers;
    unsigned n = w.L->nthreads, base = wi * 32, cnt = std::min(32u, n - base);
    unsigned exist = cnt == 32 ? 0xffffffffu : ((1u << cnt) - 1);
    for (unsigned l = 0; l < cnt; ++l) {
        Fiber& f = F[base + l];
        if (f.state != St::Warp) continue;
        unsigned need = f.wmask & exist;
        if (!((f.wmask >> l) & 1u)) {
            w.block_err = "thread " + tid_str(f.tid) + ": " + warp_op_name(f.wop) + " at " + where(f.file, f.line) +
                          " with a mask that does not include the calling lane " + std::to_string(l);
            return false;
        }
        bool ready = true;
        for (unsigned j = 0; j < cnt; ++j) {
            if (!((need >> j) & 1u)) continue;
            Fiber& g = F[base + j];
            if (g.state == St::Done) {
                char m[16];
                std::snprintf(m, sizeof m, "0x%08x", f.wmask);
                w.block_err = "thread " + tid_str(f.tid) + ": " + warp_op_name(f.wop) + " at " + where(f.file, f.line) +
                              " (mask " + m + ") waits for lane " + std::to_string(j) + ", thread " + tid_str(g.tid) +
                              ", which has exited (divergent warp collective)";
                return false;
            }
            if (g.state != St::Warp || g.wmask != f.wmask) {
                ready = false;
                continue;
            }
            if (g.wop != f.wop) {
                w.block_err = "divergent warp collectives: thread " + tid_str(f.tid) + " at " + warp_op_name(f.wop) +
                              " " + where(f.file, f.line) + ", thread " + tid_str(g.tid) + " at " +
                              warp_op_name(g.wop) + " " + where(g.file, g.line);
                return false;
            }
        }
        if (!ready) continue;
        unsigned ballot = 0;
        for (unsigned j = 0; j < cnt; ++j)
            if (((need >> j) & 1u) && F[base + j].wbits) ballot |= 1u << j;
        for (unsigned j = 0; j < cnt; ++j) {
            if (!((need >> j) & 1u)) continue;
            Fiber& g = F[base + j];
            unsigned wd = (unsigned)g.wwidth, seg = j & ~(wd - 1);
            long src = j;
            switch (g.wop) {
                case kShflIdx: src = seg + ((unsigned)g.wparam & (wd - 1)); break;
                case kShflUp: src = (j - seg) < (unsigned)g.wparam ? (long)j : (long)j - g.wparam; break;
                case kShflDown: src = (j - seg) + (unsigned)g.wparam >= wd ? (long)j : (long)j + g.wparam; break;
                case kShflXor: {
                    long s = (long)(j ^ (unsigned)g.wparam);
                    src = (s >= (long)(seg + wd) || s >= 32) ? (long)j : s;
                    break;
                }
                default: break;
            }
            switch (g.wop) {
                case kShflIdx:
                case kShflUp:
                case kShflDown:
                case kShflXor:
                    // A lane outside the mask (or past the block) gives an
                    // undefined value on the GPU: poison it (NaN / -1).
                    g.wres = (src >= 0 && src < 32 && ((need >> src) & 1u)) ? F[base + src].wbits : ~0ull;
                    break;
                case kBallot: g.wres = ballot; break;
                case kAny: g.wres = ballot != 0; break;
                case kAll: g.wres = ballot == need; break;
                default: g.wres = 0; break;
            }
            g.state = St::Ready;
        }
        released = true;
    }
    return true;
}

inline std::string describe_states(Worker& w) {
    std::vector<Fiber>& F = w.pool->fibers;
    unsigned n = w.L->nthreads;
    std::string s;
    unsigned shown = 0;
    for (unsigned i = 0; i < n && shown < 8; ++i) {
        Fiber& f = F[i];
        if (f.state == St::Block) s += " thread " + tid_str(f.tid) + " waits at __syncthreads " + where(f.file, f.line) + ";";
        else if (f.state == St::Warp)
            s += " thread " + tid_str(f.tid) + " waits at " + warp_op_name(f.wop) + " " + where(f.file, f.line) + ";";
        else continue;
        ++shown;
    }
    return s;
}

// Runs one block with a fiber per thread. Returns false (w.block_err set) on error.
inline bool run_block_fibers(Worker& w) {
    Launch& L = *w.L;
    std::vector<Fiber>& F = w.pool->fibers;
    unsigned n = L.nthreads;
    w.block_failed = false;
    w.block_err.clear();
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = F[i];
        ctx_init(f);
        f.lin = i;
        f.tid = lin2tid(i, L.block);
        f.state = St::Ready;
    }
    unsigned barrier_no = 0;
    for (;;) {
        for (unsigned k = 0; k < n; ++k) {
            Fiber& f = F[L.thread_order[k]];
            if (f.state != St::Ready) continue;
            resume(w, f);
            if (w.block_failed) return false;
        }
        bool released = false;
        for (unsigned wi = 0; wi * 32 < n; ++wi)
            if (!release_warp(w, wi, released)) return false;
        if (released) continue;
        unsigned done = 0, at_block = 0;
        const Fiber* first_done = nullptr;
        const Fiber* first_block = nullptr;
        for (unsigned i = 0; i < n; ++i) {
            if (F[i].state == St::Done) {
                ++done;
                if (!first_done) first_done = &F[i];
            } else if (F[i].state == St::Block) {
                ++at_block;
                if (!first_block) first_block = &F[i];
            }
        }
        if (done == n) return true;
        if (at_block == n - done) {
            if (done) {
                w.block_err = "barrier divergence: " + std::to_string(at_block) + " threads wait at __syncthreads " +
                              where(first_block->file, first_block->line) + " (barrier #" +
                              std::to_string(barrier_no + 1) + ") but " + std::to_string(done) +
                              " threads have exited, e.g. thread " + tid_str(first_done->tid) +
                              " (early return before a barrier?)";
                return false;
            }
            int result = 0;
            for (unsigned i = 0; i < n; ++i) {
                const Fiber& f = F[i];
                if (f.line != first_block->line || std::strcmp(f.file, first_block->file) != 0 ||
                    f.bop != first_block->bop) {
                    w.block_err = "barrier divergence at barrier #" + std::to_string(barrier_no + 1) + ": thread " +
                                  tid_str(first_block->tid) + " waits at " +
                                  where(first_block->file, first_block->line) + ", thread " + tid_str(f.tid) +
                                  " at " + where(f.file, f.line);
                    return false;
                }
            }
            switch (first_block->bop) {
                case kSyncCount:
                    for (unsigned i = 0; i < n; ++i) result += F[i].pred;
                    break;
                case kSyncAnd:
                    result = 1;
                    for (unsigned i = 0; i < n; ++i) result &= F[i].pred;
                    break;
                case kSyncOr:
                    for (unsigned i = 0; i < n; ++i) result |= F[i].pred;
                    break;
                default: break;
            }
            w.block_result = result;
            for (unsigned i = 0; i < n; ++i) F[i].state = St::Ready;
            ++barrier_no;
            continue;
        }
        w.block_err = "deadlock: no thread can proceed (" + std::to_string(done) + " exited, " +
                      std::to_string(at_block) + " at __syncthreads, the rest at warp collectives):" +
                      describe_states(w);
        return false;
    }
}

inline void run_block_loop(Worker& w) {
    Launch& L = *w.L;
    for (unsigned k = 0; k < L.nthreads; ++k) {
        threadIdx = lin2tid(L.thread_order[k], L.block);
        L.invoke(L.fn, L.args);
    }
}

// Fisher-Yates with splitmix64: a seeded order that is the same everywhere.
template <class V>
inline void shuffle(V& v, unsigned long long& state) {
    for (std::size_t i = v.size(); i > 1; --i) {
        unsigned long long z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        std::swap(v[i - 1], v[z % i]);
    }
}

inline std::string block_str(uint3 b) { return "block " + tid_str(b); }

inline void worker_main(Launch& L) {
    if (!tls_pool) tls_pool = std::make_unique<Pool>();
    Pool& pool = *tls_pool;
    Worker w;
    w.L = &L;
    w.pool = &pool;
    w.fibers = L.fibers;
    Worker* saved = cur_worker;
    cur_worker = &w;
    blockDim = L.block;
    gridDim = L.grid;
    if (L.fibers) {
        std::string err;
        if (!pool.ensure(L.nthreads, err)) {
            L.fail(err);
            cur_worker = saved;
            return;
        }
#if HOSTEMU_ASAN
        if (pool.stacks_dirty) {
            for (Fiber& f : pool.fibers)
                if (f.stack) __asan_unpoison_memory_region(f.stack, f.stack_size);
            pool.stacks_dirty = false;
        }
#endif
    }
    std::size_t poison = std::min<std::size_t>(L.shmem + HOSTEMU_SMEM_GUARD, HOSTEMU_MAX_DYN_SMEM + HOSTEMU_SMEM_GUARD);
    for (;;) {
        unsigned long long i = L.next.fetch_add(1);
        if (i >= L.nblocks || L.failed.load()) break;
        unsigned long long b = L.block_at(i);
        blockIdx = uint3{(unsigned)(b % L.grid.x), (unsigned)((b / L.grid.x) % L.grid.y),
                         (unsigned)(b / ((unsigned long long)L.grid.x * L.grid.y))};
        uint3 bi = blockIdx;
        std::memset(pool.smem, 0xff, poison);  // NaN / -1 for unwritten shared memory
        if (L.fibers) {
            if (!run_block_fibers(w)) {
                pool.stacks_dirty = true;
                L.fail(block_str(bi) + ": " + w.block_err);
                break;
            }
        } else {
            try {
                run_block_loop(w);
            } catch (const Error& e) {
                L.fail(block_str(bi) + " thread " + tid_str(threadIdx) + ": " + e.msg);
                break;
            }
        }
        for (std::size_t k = L.shmem; k < poison; ++k) {
            if (pool.smem[k] != 0xff) {
                L.fail(block_str(bi) + ": wrote dynamic shared memory at byte " + std::to_string(k) +
                       ", past the launch's shared_mem=" + std::to_string(L.shmem));
                break;
            }
        }
    }
    cur_worker = saved;
}

// Ends the process, with a message, when a launch runs past its time limit:
// a kernel stuck in an endless loop cannot be interrupted from Python, and a
// test run that dies saying why beats one that hangs until CI kills it.
struct Watchdog {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread t;
    Watchdog(double seconds, const char* name, Launch& L) {
        if (seconds <= 0) return;
        t = std::thread([this, seconds, name, &L] {
            std::unique_lock<std::mutex> lk(m);
            if (!cv.wait_for(lk, std::chrono::duration<double>(seconds), [this] { return done; })) {
                std::fprintf(stderr,
                             "\nhostemu: kernel %s still running after %.0f s (%llu of %llu blocks started); "
                             "an endless loop? Ending the process.\n",
                             name, seconds, std::min(L.next.load(), L.nblocks), L.nblocks);
                std::fflush(stderr);
                std::_Exit(124);
            }
        });
    }
    ~Watchdog() {
        if (!t.joinable()) return;
        {
            std::lock_guard<std::mutex> g(m);
            done = true;
        }
        cv.notify_all();
        t.join();
    }
};

}  // namespace hostemu

// ------------------------------------------------------------- C API
#define HOSTEMU_API extern "C" __attribute__((visibility("default")))

HOSTEMU_API int hostemu_abi() { return 2; }

HOSTEMU_API const char* hostemu_features() {
    return
#if defined(HOSTEMU_UCONTEXT)
        "context=ucontext"
#else
        "context=x86_64-asm"
#endif
#if HOSTEMU_ASAN
        " asan"
#endif
        ;
}

HOSTEMU_API int hostemu_kernel_count() { return hostemu::entry_count; }
HOSTEMU_API const char* hostemu_kernel_name(int k) { return hostemu::entries[k].name; }
HOSTEMU_API int hostemu_kernel_nparams(int k) { return (int)hostemu::entries[k].nparams; }
HOSTEMU_API const char* hostemu_kernel_param_type(int k, int j) { return hostemu::entries[k].types[j].s; }
HOSTEMU_API unsigned long long hostemu_kernel_param_size(int k, int j) { return hostemu::entries[k].sizes[j]; }

// mode: 0 loop, 1 fibers. order: 0 forward, 1 reverse, 2 shuffled by `seed`
// (both the block order and the thread order within each block). timeout_s:
// end the process past this many seconds (0: no limit).
// Returns 0, or -1 with a message in err.
HOSTEMU_API int hostemu_launch(int k, const unsigned* grid, const unsigned* block, unsigned long long shmem,
                               void** args, int mode, int order, unsigned long long seed, int workers,
                               double timeout_s, char* err, unsigned long long errlen) {
    auto fail = [&](const std::string& m) {
        if (errlen) {
            std::snprintf(err, errlen, "%s", m.c_str());
        }
        return -1;
    };
    if (k < 0 || k >= hostemu::entry_count) return fail("no such kernel");
    const hostemu::Entry& e = hostemu::entries[k];
    dim3 g(grid[0], grid[1], grid[2]), b(block[0], block[1], block[2]);
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z)
        return fail("invalid configuration: a zero grid or block dimension (CUDA refuses it)");
    if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u) return fail("invalid configuration: grid dimension too large");
    if (b.x > 1024 || b.y > 1024 || b.z > 64 || (unsigned long long)b.x * b.y * b.z > 1024)
        return fail("invalid configuration: more than 1024 threads per block (or a block dimension too large)");
    if (shmem > HOSTEMU_MAX_DYN_SMEM) return fail("dynamic shared memory over the device maximum");
    if (order < 0 || order > 2) return fail("bad order");
    hostemu::Launch L;
    L.fn = e.fn;
    L.invoke = e.invoke;
    L.args = args;
    L.grid = g;
    L.block = b;
    L.nthreads = b.x * b.y * b.z;
    L.nblocks = (unsigned long long)g.x * g.y * g.z;
    L.shmem = shmem;
    L.fibers = mode == 1;
    L.order = order;
    L.thread_order.resize(L.nthreads);
    for (unsigned i = 0; i < L.nthreads; ++i) L.thread_order[i] = order == 1 ? L.nthreads - 1 - i : i;
    if (order == 2) {
        if (L.nblocks > (1ull << 26)) return fail("too many blocks for a shuffled order");
        L.block_perm.resize(L.nblocks);
        for (unsigned long long i = 0; i < L.nblocks; ++i) L.block_perm[i] = i;
        unsigned long long state = seed;
        hostemu::shuffle(L.thread_order, state);
        hostemu::shuffle(L.block_perm, state);
    }
    {
        hostemu::Watchdog dog(timeout_s, e.name, L);
        if (workers <= 1 || L.nblocks == 1) {
            hostemu::worker_main(L);
        } else {
            unsigned nw = (unsigned)std::min<unsigned long long>((unsigned long long)workers, L.nblocks);
            std::vector<std::thread> ts;
            for (unsigned i = 0; i < nw; ++i) ts.emplace_back([&L] { hostemu::worker_main(L); });
            for (auto& t : ts) t.join();
        }
    }
    if (L.failed.load()) return fail(L.err);
    return 0;
}
