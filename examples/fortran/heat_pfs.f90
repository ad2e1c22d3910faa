! heat_pfs: 2-D heat diffusion (Jacobi iteration) on a grid that lives in a mapped PSLS PFS
! file, with a checkpoint every few steps. The Fortran counterpart of examples/src/heat.rs,
! except that the grid comes from, and goes back to, a PFS file.
!
! The PFS file (--file NAME, default heat-grid) holds an N x N grid of 8-byte reals (native,
! i.e. little-endian on x86-64), row after row: grid(i, j) at byte 8 * (i * N + j), 0-based.
! N comes from the file's size. Import it beforehand, run, then export the result:
!
!   psls-launch -n 4 --virtual-nodes 4 -- psls-pfs import grid.dat heat-grid
!   psls-launch -n 4 --virtual-nodes 4 -- ./heat_pfs --file heat-grid --steps 200 --every 10
!   psls-launch -n 4 --virtual-nodes 4 -- psls-pfs export heat-grid result.dat
!
! The edges of the grid (first and last row and column) stay as they are in the file; each
! step sets every interior point to the mean of its four neighbours. Step s reads one grid and
! writes the other: the file's grid for even s, a global array (the work grid) for odd s, so
! after an odd number of steps the last one is copied back into the file. Rows are
! block-distributed over the ranks; each step reads the neighbouring ranks' edge rows through
! the shared virtual memory.
!
! Checkpoints: every --every steps, at the head of the loop (psls_checkpoint), with the step
! number as protected private state; a restarted run (after a crash, a reboot or a node loss,
! under psls-launch) goes on from the last checkpoint. A job that checkpoints may not flush its
! mapped files (that would put the files on disk ahead of the memory checkpoint): the file is
! published by the permanent checkpoint. So at the end the program takes one,
! psls_checkpoint_now(PSLS_CKPT_PERMANENT), which writes the final grid into the file on disk
! (atomically, primary and mirror), then closes the file (psls_file_close unmaps it; it does
! not flush in a job that checkpoints). With --every 0 the job never checkpoints and
! psls_file_close flushes the file instead.
!
! Rank 0 prints the heat below the top edge and a checksum (FNV-1a 64 over the bit patterns of
! the final grid, in file order), the same from run to run, crashed and restarted or not. With
! the initial grid of heat.rs (top row 1.0, the rest 0.0) it prints the Rust heat's checksum.

program heat_pfs
  use, intrinsic :: iso_fortran_env, only: int64, real64, output_unit, error_unit
  use mpi
  use psls
  use example_util
  implicit none

  character(len=*), parameter :: usage = &
       'usage: heat_pfs [--file NAME] [--steps S] [--every F]' // new_line('a') // &
       new_line('a') // &
       '2-D heat diffusion for S Jacobi steps (default 200) on the N x N grid of 8-byte reals' &
       // new_line('a') // &
       'in the PSLS PFS file NAME (default heat-grid; import it with psls-pfs import), with' // &
       new_line('a') // &
       'a checkpoint every F steps (default 10; 0: none). The edges stay fixed. The final' // &
       new_line('a') // &
       'grid is left in the file (export it with psls-pfs export); prints its checksum.'

  integer :: ierr, provided, rank, nargs, argi, e
  integer(int64) :: steps, every, n, fsize, first, last, s, i, j, checkpoints, epoch, hash
  ! Private state: saved at every checkpoint, restored by psls_protect after a restart.
  integer(int64), target :: step, dims(2)
  logical :: restarted, help, checkpointing
  type(c_ptr) :: h, f, p
  ! grid: the file's grid; work: the other one (a global array); src/dst: this step's.
  ! grid(j, i) is row i, column j (1-based): rows are contiguous, as in the file.
  real(c_double), pointer :: grid(:, :), work(:, :), src(:, :), dst(:, :)
  real(real64), allocatable :: row(:)
  real(real64) :: heat, t0, elapsed
  character(len=256) :: arg, msg, fname

  call MPI_Init_thread(MPI_THREAD_MULTIPLE, provided, ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)

  ! Options.
  fname = 'heat-grid'
  steps = 200
  every = 10
  help = .false.
  msg = ''
  nargs = command_argument_count()
  argi = 1
  do while (argi <= nargs .and. len_trim(msg) == 0)
    call get_command_argument(argi, arg)
    select case (trim(arg))
    case ('-h', '--help')
      help = .true.
      exit
    case ('--file')
      argi = argi + 1
      if (argi > nargs) then
        msg = '--file needs a value'
      else
        call get_command_argument(argi, fname)
        if (len_trim(fname) == 0) msg = '--file: empty name'
      end if
    case ('--steps')
      call parse_count('--steps', argi, steps, msg)
    case ('--every')
      call parse_count('--every', argi, every, msg)
    case default
      msg = 'unknown option "' // trim(arg) // '"'
    end select
    argi = argi + 1
  end do
  if (help) then
    if (rank == 0) write (output_unit, '(a)') usage
    call MPI_Finalize(ierr)
    call quit(0)
  end if
  if (len_trim(msg) > 0) then
    if (rank == 0) write (error_unit, '(a)') 'heat_pfs: ' // trim(msg) // new_line('a') // &
         new_line('a') // usage
    call MPI_Finalize(ierr)
    call quit(2)
  end if

  call psls_init(MPI_COMM_WORLD, h, e)
  if (e /= PSLS_OK) then
    write (error_unit, '(a)') 'heat_pfs: psls_init: ' // psls_error_message(e)
    call quit(2)
  end if

  ! The same calls in the same order in every run, restarted or not.
  call psls_file_open(h, fname, f, p, fsize, e)
  if (e == PSLS_ERR_NOT_FOUND) then
    if (rank == 0) write (error_unit, '(a)') 'heat_pfs: no PFS file "' // trim(fname) // &
         '" (' // psls_error_message(e) // '): import the initial grid first, e.g. ' // &
         'psls-launch -n 4 --virtual-nodes 4 -- psls-pfs import grid.dat ' // trim(fname)
    ! Every rank is here (the open agreed on it): wait until rank 0 has said why before any
    ! rank exits, or the launcher may kill rank 0 first and the message is lost (seen under
    ! MPICH's hydra).
    call MPI_Barrier(MPI_COMM_WORLD, ierr)
    call quit(1)
  end if
  call check(e, 'psls_file_open("' // trim(fname) // '")')
  n = isqrt(fsize / 8)
  if (mod(fsize, 8_int64) /= 0 .or. n * n * 8 /= fsize .or. n < 3) then
    if (rank == 0) write (error_unit, '(a)') 'heat_pfs: PFS file "' // trim(fname) // &
         '" holds ' // itoa(fsize) // ' bytes: not an N x N grid of 8-byte reals with N >= 3'
    call MPI_Barrier(MPI_COMM_WORLD, ierr)  ! as above: the size is the same on every rank
    call quit(1)
  end if
  call c_f_pointer(p, grid, [n, n])
  call psls_alloc_real8_2d(h, n, n, work, e)
  call check(e, 'psls_alloc_real8_2d')
  step = 0
  call psls_protect(h, 'step', step, e)
  call check(e, 'psls_protect step')
  dims = [n, steps]
  call psls_protect(h, 'shape', dims, e)
  call check(e, 'psls_protect shape')
  call psls_restarted(h, restarted, epoch, e)
  call check(e, 'psls_restarted')
  if (restarted .and. dims(1) /= n) then
    write (error_unit, '(a)') 'heat_pfs: rank ' // itoa(int(rank, int64)) // &
         ': this run restarts a grid of ' // itoa(dims(1)) // ' x ' // itoa(dims(1)) // &
         ', not the ' // itoa(n) // ' x ' // itoa(n) // ' grid of "' // trim(fname) // &
         '": set PSLS_CKPT_NAME to start a separate run'
    call quit(1)
  end if
  call psls_local_range(h, n, first, last, e)       ! my rows: first..last (1-based)
  call check(e, 'psls_local_range')

  if (.not. restarted) then
    ! The work grid starts as a copy of the file's: the edges are then the same in both.
    do i = first, last
      work(:, i) = grid(:, i)
    end do
  else if (rank == 0) then
    write (output_unit, '(a)') 'heat_pfs: restarted from checkpoint ' // itoa(epoch) // &
         ' at step ' // itoa(step)
  end if
  call psls_barrier(h, e)
  call check(e, 'psls_barrier')

  t0 = MPI_Wtime()
  allocate (row(n))
  checkpoints = 0
  do s = step, steps - 1
    if (every > 0) then
      if (mod(s, every) == 0) then
        step = s
        call psls_checkpoint(h, e)
        call check(e, 'psls_checkpoint')
        checkpoints = checkpoints + 1
      end if
    end if
    if (mod(s, 2_int64) == 0) then
      src => grid
      dst => work
    else
      src => work
      dst => grid
    end if
    ! Interior rows only: the edges stay fixed.
    do i = max(first, 2_int64), min(last, n - 1)
      row(1) = src(1, i)
      row(n) = src(n, i)
      do j = 2, n - 1
        row(j) = 0.25_real64 * (((src(j, i - 1) + src(j, i + 1)) + src(j - 1, i)) + src(j + 1, i))
      end do
      dst(:, i) = row
    end do
    call psls_barrier(h, e)
    call check(e, 'psls_barrier')
  end do
  elapsed = MPI_Wtime() - t0

  ! After an odd number of steps the final grid is the work grid: into the file with it.
  if (mod(steps, 2_int64) == 1) then
    do i = first, last
      grid(:, i) = work(:, i)
    end do
    call psls_barrier(h, e)
    call check(e, 'psls_barrier')
  end if

  if (rank == 0) then
    heat = 0
    do i = 2, n
      do j = 1, n
        heat = heat + grid(j, i)
      end do
    end do
    hash = fnv_init()
    do i = 1, n
      do j = 1, n
        hash = fnv_add(hash, grid(j, i))
      end do
    end do
    write (output_unit, '(a)') 'heat_pfs: ' // itoa(n) // ' x ' // itoa(n) // ', ' // &
         itoa(steps) // ' steps, checkpoint every ' // itoa(every) // ' steps (' // &
         itoa(checkpoints) // ' taken in this run), heat below the edge ' // &
         fmt_fixed(heat, 6) // ', checksum ' // hex16(hash)
    write (output_unit, '(a)') 'heat_pfs: main loop ' // fmt_fixed(elapsed, 3) // ' s'
  end if
  call psls_barrier(h, e)
  call check(e, 'psls_barrier')

  ! Publish the final grid to the file on disk. In a job that checkpoints, only a permanent
  ! checkpoint may do it; the step is set past the end first, so that a run restarted from
  ! this checkpoint goes straight here again.
  checkpointing = restarted .or. checkpoints > 0
  if (checkpointing) then
    step = steps
    call psls_checkpoint_now(h, PSLS_CKPT_PERMANENT, e)
    call check(e, 'psls_checkpoint_now(PSLS_CKPT_PERMANENT)')
  end if
  call psls_file_close(f, e)
  call check(e, 'psls_file_close')
  if (rank == 0) write (output_unit, '(a)') 'heat_pfs: final grid published to PFS file "' &
       // trim(fname) // '" (' // trim(merge('permanent checkpoint', 'flush               ', &
       checkpointing)) // ')'
  call psls_free(h, work, e)
  call check(e, 'psls_free')
  call psls_finalize(h, e)
  if (e /= PSLS_OK) then
    write (error_unit, '(a)') 'heat_pfs: psls_finalize: ' // psls_error_message(e)
    call quit(2)
  end if
  call MPI_Finalize(ierr)

contains

  ! The integer square root of x >= 0 (exact for any integer(8)).
  pure function isqrt(x) result(r)
    integer(int64), intent(in) :: x
    integer(int64) :: r
    r = int(sqrt(real(x, real64)), int64)
    do while (r > 0 .and. r > x / max(r, 1_int64))
      r = r - 1
    end do
    do while ((r + 1) <= x / (r + 1))
      r = r + 1
    end do
  end function isqrt

  ! Stops this rank with a message naming the failed call unless e is PSLS_OK.
  subroutine check(e, what)
    integer, intent(in) :: e
    character(*), intent(in) :: what
    if (e == PSLS_OK) return
    write (error_unit, '(a)') 'heat_pfs: rank ' // itoa(int(rank, int64)) // ': ' // what // &
         ': ' // psls_error_message(e)
    call quit(1)
  end subroutine check

end program heat_pfs
