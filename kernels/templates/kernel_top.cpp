// fpgaas kernel top for the hls4ml project "${project}", written by builder.kernel from
// kernels/templates/kernel_top.cpp. The same file is the Vitis kernel (v++ -c) and, compiled
// with g++, the emulation library the CPU twin loads (kernels.twin).
//
// ABI: x is n rows of ${n_inputs} float32, y is n rows of ${n_outputs} float32. Each value is
// converted exactly as hls4ml's bridge does (nnet::convert_data: input_t(float) in,
// float(result_t) out), so results match hls4ml's predict() bit for bit.
#include "${project}.h"

// The emulation build passes -fvisibility=hidden and defines FPGAAS_EXPORT to export only the
// kernel symbol; the HLS build leaves it empty.
#ifndef FPGAAS_EXPORT
#define FPGAAS_EXPORT
#endif

static const unsigned int FPGAAS_N_IN = ${n_inputs};
static const unsigned int FPGAAS_N_OUT = ${n_outputs};

extern "C" FPGAAS_EXPORT void ${kernel}(const float *x, float *y, unsigned int n) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = y offset = slave bundle = gmem1
#pragma HLS INTERFACE s_axilite port = x
#pragma HLS INTERFACE s_axilite port = y
#pragma HLS INTERFACE s_axilite port = n
#pragma HLS INTERFACE s_axilite port = return

samples:
    for (unsigned int s = 0; s < n; s++) {
#pragma HLS PIPELINE II = 1
        ${input_type} in[FPGAAS_N_IN];
#pragma HLS ARRAY_PARTITION variable = in complete
        ${output_type} out[FPGAAS_N_OUT];
#pragma HLS ARRAY_PARTITION variable = out complete

    to_fixed:
        for (unsigned int i = 0; i < FPGAAS_N_IN; i++) {
            in[i] = ${input_type}(x[(unsigned long)s * FPGAAS_N_IN + i]);
        }

        ${top}(in, out);

    to_float:
        for (unsigned int j = 0; j < FPGAAS_N_OUT; j++) {
            y[(unsigned long)s * FPGAAS_N_OUT + j] = float(out[j]);
        }
    }
}

#ifndef __SYNTHESIS__
// Emulation only (HLS never sees it): the batch split over CPU threads. The kernel is stateless
// (weights are compiled in), so disjoint row ranges run independently.
#include <algorithm>
#include <thread>
#include <vector>

extern "C" FPGAAS_EXPORT void ${kernel}_batch(const float *x, float *y, unsigned int n, unsigned int threads) {
    if (threads < 2 || n < 2 * threads) {
        ${kernel}(x, y, n);
        return;
    }
    const unsigned int per = (n + threads - 1) / threads;
    std::vector<std::thread> workers;
    for (unsigned int first = 0; first < n; first += per) {
        const unsigned int count = std::min(per, n - first);
        workers.emplace_back(${kernel}, x + (unsigned long)first * FPGAAS_N_IN,
                             y + (unsigned long)first * FPGAAS_N_OUT, count);
    }
    for (std::thread &worker : workers) {
        worker.join();
    }
}
#endif
