// The MPI implementation of Communicator (internal to src/parallel/; deliberately free of mpi.h so that only
// mpi_communicator.cpp sees MPI). Built with MPI only when CMake finds it (DEEPMOE_HAVE_MPI).
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace deepmoe {

// Initializes MPI (MPI_THREAD_FUNNELED: only the thread that created it calls MPI) and returns a communicator
// over MPI_COMM_WORLD that finalizes MPI when destroyed. Throws Error when MPI is not compiled in.
std::unique_ptr<Communicator> make_mpi_world_communicator();

}  // namespace deepmoe
