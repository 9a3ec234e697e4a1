// heddle_bench report OUT_PREFIX FILE...: the RESULT lines of the suites -> bench/results/latest.*
// Each FILE is one run of one program. A line "RESULT key value" is one sample of key; a line
// "RESULT key value min max" is a figure its program already took the median of (its rounds),
// with their spread. The figure of a key is the median of its samples across runs, and its
// spread their min and max. Writes OUT_PREFIX.json (one object: every key's figure, plus
// "spread", "goals" and "machine"), OUT_PREFIX.md (the goals table, then every figure) and
// OUT_PREFIX.dat (the goal ratios, for gnuplot).
#include <sys/utsname.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support.h"

namespace heddle::bench {
namespace {

struct Figure {
  std::vector<double> samples;
  double low = NAN, high = NAN;  // the spread a program reported with its own median, if any

  [[nodiscard]] double min() const {
    return samples.size() == 1 && !std::isnan(low) ? low : std::ranges::min(samples);
  }
  [[nodiscard]] double max() const {
    return samples.size() == 1 && !std::isnan(high) ? high : std::ranges::max(samples);
  }
};

// The goals, each a ratio or figure measured in the same run.
struct Goal {
  const char* key;
  const char* what;
  bool at_most;  // the figure must be <= limit (else >=)
  double limit;
};

constexpr Goal kGoals[] = {
    {"status_rtt_p50_ratio_to_socketpair", "Status RTT p50, ours / raw socketpair ping-pong", true,
     2.0},
    {"status_rtt_max_us", "Status RTT max (16 warm-up, max of 256), us", true, 1000.0},
    {"spawn_p50_ratio_to_bwrap_composition",
     "spawn -> MountReady p50, ours / bwrap + libfuse example", true, 1.0},
    {"spawn_p99_ms", "spawn -> MountReady p99, ms", true, 20.0},
    {"warm_seq_read_ratio_to_native", "1 GiB read, warm, throughput ours / native", false, 0.9},
    {"cold_seq_read_ratio_to_passthrough_ll", "1 GiB read, cold, throughput ours / passthrough_ll",
     false, 1.0},
    {"metadata_walk_ratio_to_passthrough_ll", "walk 10,000 files, cold, time ours / passthrough_ll",
     true, 1.0},
    {"warm_walk_ratio_to_native", "walk 50,050 entries of a git thread, warm, time ours / native",
     true, 2.0},
    // Writable mounts (suite write): the overlay against native and fuse-overlayfs.
    {"write_seq_1g_ratio_to_native", "1 GiB write + fsync, throughput ours / native", false, 0.5},
    {"tar_x_10k_ratio_to_native", "tar -x of 10,000 files, time ours / native", true, 2.0},
    {"tar_x_10k_ratio_to_fuse_overlayfs", "tar -x of 10,000 files, time ours / fuse-overlayfs",
     true, 1.0},
    {"make_j2_ratio_to_native", "make -j2 of a 200-file C project, time ours / native", true, 1.3},
    // "Unchanged": a writable mount with an empty overlay against a read-only one, within 10%.
    {"empty_overlay_cold_seq_read_ratio_to_read_only",
     "1 GiB read, cold, empty overlay / read-only", false, 0.9},
    {"empty_overlay_warm_seq_read_ratio_to_read_only",
     "1 GiB read, warm, empty overlay / read-only", false, 0.9},
    {"empty_overlay_walk10k_cold_ratio_to_read_only",
     "walk 10,000 files, cold, time empty overlay / read-only", true, 1.1},
    {"empty_overlay_walk10k_warm_ratio_to_read_only",
     "walk 10,000 files, warm, time empty overlay / read-only", true, 1.1},
};

std::string format(double value) {
  char text[64];
  std::snprintf(text, sizeof text, std::fabs(value) >= 100 ? "%.0f" : "%.3g", value);
  return text;
}

std::string machine() {
  utsname name{};
  ::uname(&name);
  return std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, kernel " + name.release;
}

}  // namespace

int report_main(const std::string& out, const std::vector<std::string>& files) {
  std::map<std::string, Figure> figures;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) {
      std::cerr << "heddle_bench report: cannot read " << file << "\n";
      return 1;
    }
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::string tag, key;
      double value = NAN;
      if (!(words >> tag >> key >> value) || tag != "RESULT") continue;
      Figure& figure = figures[key];
      figure.samples.push_back(value);
      double low = NAN, high = NAN;
      if (words >> low >> high) {
        figure.low = low;
        figure.high = high;
      }
    }
  }

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));

  nlohmann::ordered_json json;
  nlohmann::ordered_json spread = nlohmann::ordered_json::object();
  for (const auto& [key, figure] : figures) {
    json[key] = median(figure.samples);
    spread[key] = {{"min", figure.min()}, {"max", figure.max()}, {"runs", figure.samples.size()}};
  }
  nlohmann::ordered_json goals = nlohmann::ordered_json::array();
  std::ostringstream md;
  std::ofstream dat(out + ".dat");
  md << "# Benchmarks, " << date << "\n\n"
     << "Machine: " << machine() << ". Each figure is the median across runs (or of a program's "
     << "own rounds), with the spread; ratios are ours / the reference, measured in the same "
        "run.\n\n"
     << "| goal | figure | spread | limit | met |\n|---|---:|---|---:|---|\n";
  dat << "# index label value limit met\n";
  int index = 0;
  for (const Goal& goal : kGoals) {
    const auto found = figures.find(goal.key);
    const bool present = found != figures.end();
    const double value = present ? median(found->second.samples) : NAN;
    const bool met = present && (goal.at_most ? value <= goal.limit : value >= goal.limit);
    goals.push_back({{"key", goal.key},
                     {"limit", (goal.at_most ? "<= " : ">= ") + format(goal.limit)},
                     {"value", present ? nlohmann::ordered_json(value) : nlohmann::ordered_json()},
                     {"met", met}});
    md << "| " << goal.what << " (`" << goal.key << "`) | "
       << (present ? format(value) : "not measured") << " | "
       << (present ? format(found->second.min()) + " – " + format(found->second.max()) : "-")
       << " | " << (goal.at_most ? "≤ " : "≥ ") << format(goal.limit) << " | "
       << (present ? (met ? "yes" : "**no**") : "**not measured**") << " |\n";
    if (present) {
      // Plotted as figure / limit, so that 1 is the goal line for every bar; below 1 is good
      // for an upper limit, above 1 for a lower one.
      dat << index++ << " \"" << goal.key << "\" " << value / goal.limit << " 1 " << (met ? 1 : 0)
          << "\n";
    }
  }
  md << "\n## Every figure\n\n| key | median | min | max | runs |\n|---|---:|---:|---:|---:|\n";
  for (const auto& [key, figure] : figures) {
    md << "| `" << key << "` | " << format(median(figure.samples)) << " | " << format(figure.min())
       << " | " << format(figure.max()) << " | " << figure.samples.size() << " |\n";
  }
  json["spread"] = spread;
  json["goals"] = goals;
  json["machine"] = {{"description", machine()}, {"date", date}};
  std::ofstream(out + ".json") << json.dump(2) << "\n";
  std::ofstream(out + ".md") << md.str();
  std::cout << md.str();
  return 0;
}

}  // namespace heddle::bench
