#ifndef SLUICE_VERSION_H
#define SLUICE_VERSION_H
/* Kept in step with project() in CMakeLists.txt and the rockspec. */
#define SLUICE_VERSION "0.1.0"
#endif
