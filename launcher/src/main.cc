#include "cli.h"

int main(int argc, char** argv) { return heddle::launcher::run_cli(argc, argv); }
