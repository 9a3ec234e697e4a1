#include "cli.h"

// The environment is read here, once; everything below gets it as settings.
int main(int argc, char** argv) {
  using namespace heddle::launcher;
  return run_cli(argc, argv, LauncherEnvironment::read());
}
