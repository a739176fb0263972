/* cuda_emu.cpp — the launch loop of the CPU emulation (see cuda_emu.h). */
#include <cstdio>

#include "cuda_emu.h"

thread_local dim3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;
thread_local emu_block_ctx emu_ctx;

void emu_launch_impl(dim3 grid, dim3 block, const std::function<void()> &fn) {
    const unsigned nt = block.x * block.y * block.z;
    if (block.y != 1 || block.z != 1 || nt == 0 || nt > 1024) {
        std::fprintf(stderr, "cuda_emu: block (%u,%u,%u) not supported\n", block.x, block.y, block.z);
        std::abort();
    }
    std::barrier<> bar((std::ptrdiff_t)nt);
    std::vector<double> slots(nt);
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (unsigned t = 0; t < nt; t++)
        threads.emplace_back([&, t] {
            threadIdx = dim3(t, 0, 0);
            blockDim = block;
            gridDim = grid;
            emu_ctx.bar = &bar;
            emu_ctx.slots = slots.data();
            for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                    for (unsigned x = 0; x < grid.x; x++) {
                        blockIdx = dim3(x, y, z);
                        fn();
                        bar.arrive_and_wait(); /* the next block reuses the shared statics */
                    }
        });
    for (auto &th : threads) th.join();
}
