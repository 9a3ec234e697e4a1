// spdlog's compiled part, built once into this project (target heddle_spdlog) from Debian's
// libspdlog-dev headers, as spdlog's own src/*.cpp build it (SPDLOG_COMPILED_LIB: every other
// translation unit sees declarations only), with fmt header-only. Linking libspdlog.so and
// libfmt.so instead made every exec of the worker and the guard load them and libstdc++.so,
// about 1.2 ms of dynamic linking per process on the path to MountReady; without them the
// programs link libstdc++ statically (see HEDDLE_STATIC_CXX_LINK in CMakeLists.txt).
#ifndef SPDLOG_COMPILED_LIB
#error "heddle_spdlog is spdlog's compiled library: build with SPDLOG_COMPILED_LIB"
#endif

#include <mutex>

#include <spdlog/cfg/helpers-inl.h>
#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/rotating_file_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

// The class templates this project instantiates with the mutexes it uses (spdlog's src/ does
// the same for its library).
template spdlog::logger::logger(std::string name, sinks_init_list::iterator begin,
                                sinks_init_list::iterator end);
template class spdlog::sinks::base_sink<std::mutex>;
template class spdlog::sinks::base_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::rotating_file_sink<std::mutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stderr_sink<spdlog::details::console_mutex>;
