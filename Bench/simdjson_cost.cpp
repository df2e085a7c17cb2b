/*
 * The same lines through simdjson's DOM parser (Debian's libsimdjson-dev), a reference for
 * floor_cost's validation: simdjson::dom::parser::parse checks a whole document (structure,
 * UTF-8, numbers) and builds its tape, the work that corresponds to our validation and index.
 *
 *   simdjson_cost EVENTS.ndjson [N] [ROUNDS]
 *
 * Prints the median over ROUNDS of the CPU ns per line, and simdjson's implementation (the
 * SIMD kernel it chose for this CPU at run time). Built and run by scripts/bench-floor.
 */
#include <simdjson.h>
#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static double cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s EVENTS.ndjson [N=20000] [ROUNDS=7]\n", argv[0]);
        return 2;
    }
    size_t want = argc > 2 ? std::stoul(argv[2]) : 20000;
    int rounds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 7;
    std::ifstream in(argv[1]);
    std::vector<simdjson::padded_string> lines;
    for (std::string line; lines.size() < want && std::getline(in, line);)
        if (!line.empty()) lines.emplace_back(line);
    if (lines.empty()) {
        std::fprintf(stderr, "no lines in %s\n", argv[1]);
        return 1;
    }
    simdjson::dom::parser parser;
    size_t bad = 0;
    std::vector<double> per;
    for (int r = 0; r < rounds; r++) {
        double t0 = cpu_ns();
        for (auto &l : lines) {
            simdjson::dom::element doc;
            if (parser.parse(l).get(doc)) bad++;
        }
        per.push_back((cpu_ns() - t0) / lines.size());
    }
    std::sort(per.begin(), per.end());
    double med = rounds % 2 ? per[rounds / 2] : (per[rounds / 2 - 1] + per[rounds / 2]) / 2;
    std::printf("  simdjson %s, DOM parse %7.1f ns  (%zu lines, %d rounds, %zu invalid)\n",
                simdjson::get_active_implementation()->name().c_str(), med, lines.size(), rounds, bad);
    return bad != 0;
}
