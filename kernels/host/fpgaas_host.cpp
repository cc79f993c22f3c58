// fpgaas_host: the native (C++, XRT native API) host program for an fpgaas kernel.
//
// It does per call what the Python service does through PYNQ -- copy the batch into a buffer
// object, sync it to the card, run the kernel, sync the result back -- and prints the wall
// time of each stage as CSV, so the two can be compared stage by stage (the source paper's
// Figure 1 compares PYNQ with an OpenCL host). The kernel ABI is fixed for every artifact:
//     extern "C" void fpgaas_kernel(const float* x, float* y, unsigned int n)
// with x holding n rows of n_inputs float32 and y n rows of n_outputs float32.
//
// Usage: fpgaas_host XCLBIN N_INPUTS N_OUTPUTS [--batch N] [--calls K] [--device I]
//                    [--timeout-ms T] [--input FILE.f32] [--output FILE.f32]
// CSV on stdout: call,batch,to_device_us,kernel_us,from_device_us,total_us
// Exit status: 0 on success, 1 on a usage error, 2 on a device error or kernel timeout.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    std::string xclbin;
    unsigned n_inputs = 0;
    unsigned n_outputs = 0;
    unsigned batch = 1;
    unsigned calls = 1000;
    unsigned device = 0;
    unsigned timeout_ms = 1000;
    std::string input;   // raw float32, rows of n_inputs; random normal when empty
    std::string output;  // raw float32 results of the last call, when set
};

unsigned parse_unsigned(const std::string& text, const char* what) {
    std::size_t used = 0;
    unsigned long value = std::stoul(text, &used);
    if (used != text.size() || value == 0) throw std::invalid_argument(std::string(what) + " must be a positive integer");
    return static_cast<unsigned>(value);
}

Options parse(int argc, char** argv) {
    if (argc < 4) throw std::invalid_argument("expected XCLBIN N_INPUTS N_OUTPUTS");
    Options o;
    o.xclbin = argv[1];
    o.n_inputs = parse_unsigned(argv[2], "N_INPUTS");
    o.n_outputs = parse_unsigned(argv[3], "N_OUTPUTS");
    for (int i = 4; i < argc; i += 2) {
        std::string flag = argv[i];
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
        std::string value = argv[i + 1];
        if (flag == "--batch") o.batch = parse_unsigned(value, "--batch");
        else if (flag == "--calls") o.calls = parse_unsigned(value, "--calls");
        else if (flag == "--device") o.device = static_cast<unsigned>(std::stoul(value));
        else if (flag == "--timeout-ms") o.timeout_ms = parse_unsigned(value, "--timeout-ms");
        else if (flag == "--input") o.input = value;
        else if (flag == "--output") o.output = value;
        else throw std::invalid_argument("unknown option " + flag);
    }
    return o;
}

std::vector<float> load_inputs(const Options& o) {
    std::vector<float> x(static_cast<std::size_t>(o.batch) * o.n_inputs);
    if (o.input.empty()) {
        std::mt19937 rng(1234);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::generate(x.begin(), x.end(), [&] { return normal(rng); });
        return x;
    }
    std::ifstream in(o.input, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + o.input);
    in.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
    if (in.gcount() != static_cast<std::streamsize>(x.size() * sizeof(float)))
        throw std::runtime_error(o.input + " holds fewer than batch * n_inputs float32 values");
    return x;
}

double micros(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::micro>(b - a).count();
}

int run(const Options& o) {
    const std::size_t x_bytes = static_cast<std::size_t>(o.batch) * o.n_inputs * sizeof(float);
    const std::size_t y_bytes = static_cast<std::size_t>(o.batch) * o.n_outputs * sizeof(float);
    std::vector<float> x = load_inputs(o);
    std::vector<float> y(static_cast<std::size_t>(o.batch) * o.n_outputs);

    // Set-up, once: program the card and allocate both buffers at the batch size.
    xrt::device device(o.device);
    xrt::uuid uuid = device.load_xclbin(o.xclbin);
    xrt::kernel kernel(device, uuid, "fpgaas_kernel");
    xrt::bo x_bo(device, x_bytes, kernel.group_id(0));
    xrt::bo y_bo(device, y_bytes, kernel.group_id(1));
    float* x_map = x_bo.map<float*>();
    float* y_map = y_bo.map<float*>();

    std::cout << "call,batch,to_device_us,kernel_us,from_device_us,total_us\n";
    for (unsigned call = 0; call < o.calls; ++call) {
        auto t0 = Clock::now();
        std::copy(x.begin(), x.end(), x_map);
        x_bo.sync(XCL_BO_SYNC_BO_TO_DEVICE, x_bytes, 0);
        auto t1 = Clock::now();
        xrt::run r = kernel(x_bo, y_bo, o.batch);
        ert_cmd_state state = r.wait(std::chrono::milliseconds(o.timeout_ms));
        if (state != ERT_CMD_STATE_COMPLETED) {
            std::cerr << "fpgaas_host: kernel did not complete within " << o.timeout_ms
                      << " ms (state " << state << ")\n";
            return 2;
        }
        auto t2 = Clock::now();
        y_bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE, y_bytes, 0);
        std::copy(y_map, y_map + y.size(), y.begin());
        auto t3 = Clock::now();
        std::cout << call << ',' << o.batch << ',' << micros(t0, t1) << ',' << micros(t1, t2) << ','
                  << micros(t2, t3) << ',' << micros(t0, t3) << '\n';
    }
    if (!o.output.empty()) {
        std::ofstream out(o.output, std::ios::binary);
        out.write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(y_bytes));
        if (!out) throw std::runtime_error("cannot write " + o.output);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        options = parse(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "fpgaas_host: " << e.what() << "\n"
                  << "usage: fpgaas_host XCLBIN N_INPUTS N_OUTPUTS [--batch N] [--calls K] [--device I]"
                     " [--timeout-ms T] [--input FILE.f32] [--output FILE.f32]\n";
        return 1;
    }
    try {
        return run(options);
    } catch (const std::exception& e) {
        std::cerr << "fpgaas_host: device error: " << e.what() << "\n";
        return 2;
    }
}
