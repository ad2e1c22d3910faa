! Helpers shared by the Fortran examples (mgs.f90, heat_pfs.f90): the Rust examples' wrapping
! u64 arithmetic and FNV-1a checksum, done bit-exactly on integer(8) with bit intrinsics only
! (no signed overflow); their number formatting; option parsing; and exiting with a status.
module example_util
  use, intrinsic :: iso_c_binding, only: c_int
  use, intrinsic :: iso_fortran_env, only: int64, real64, output_unit, error_unit
  implicit none
  private
  public :: mulwrap, fnv_init, fnv_add, hex16, itoa, fmt_fixed, fmt_exp3, parse_count
  public :: quit, crash

  integer(int64), parameter :: FNV_OFFSET = ior(shiftl(int(z'CBF29CE4', int64), 32), &
       int(z'84222325', int64))
  integer(int64), parameter :: FNV_PRIME = ior(shiftl(int(z'00000100', int64), 32), &
       int(z'000001B3', int64))

  interface
    subroutine c_exit(status) bind(C, name="exit")
      import :: c_int
      integer(c_int), value :: status
    end subroutine c_exit
    subroutine c_abort() bind(C, name="abort")
    end subroutine c_abort
  end interface

contains

  ! a * b modulo 2**64 (Rust's u64 wrapping_mul), by 16-bit limbs: every partial sum stays
  ! below 2**36.
  pure function mulwrap(a, b) result(r)
    integer(int64), intent(in) :: a, b
    integer(int64) :: r, al(0:3), bl(0:3), acc, carry
    integer :: i, k
    do i = 0, 3
      al(i) = ibits(a, 16 * i, 16)
      bl(i) = ibits(b, 16 * i, 16)
    end do
    r = 0
    carry = 0
    do k = 0, 3
      acc = carry
      do i = 0, k
        acc = acc + al(i) * bl(k - i)
      end do
      r = ior(r, shiftl(iand(acc, int(z'FFFF', int64)), 16 * k))
      carry = shiftr(acc, 16)
    end do
  end function mulwrap

  pure function fnv_init() result(h)
    integer(int64) :: h
    h = FNV_OFFSET
  end function fnv_init

  ! One step of FNV-1a 64 over the bit pattern of x (Rust: (h ^ x.to_bits()) * prime).
  pure function fnv_add(h, x) result(r)
    integer(int64), intent(in) :: h
    real(real64), intent(in) :: x
    integer(int64) :: r
    r = mulwrap(ieor(h, transfer(x, 0_int64)), FNV_PRIME)
  end function fnv_add

  ! 16 lowercase hex digits (Rust: {:016x}).
  pure function hex16(x) result(s)
    integer(int64), intent(in) :: x
    character(len=16) :: s
    character(len=16), parameter :: digits = '0123456789abcdef'
    integer :: k, d
    do k = 1, 16
      d = int(ibits(x, 4 * (16 - k), 4))
      s(k:k) = digits(d + 1:d + 1)
    end do
  end function hex16

  pure function itoa(x) result(s)
    integer(int64), intent(in) :: x
    character(:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') x
    s = trim(buf)
  end function itoa

  ! x with d decimals (Rust: {:.d}).
  function fmt_fixed(x, d) result(s)
    real(real64), intent(in) :: x
    integer, intent(in) :: d
    character(:), allocatable :: s
    character(len=64) :: buf
    character(len=16) :: f
    write (f, '(a, i0, a)') '(f40.', d, ')'
    write (buf, f) x
    s = trim(adjustl(buf))
  end function fmt_fixed

  ! x as Rust's {:.3e}: 1.234e-5, 0.000e0.
  function fmt_exp3(x) result(s)
    real(real64), intent(in) :: x
    character(:), allocatable :: s
    character(len=32) :: buf
    integer :: at, e
    if (.not. (x > 0 .or. x < 0)) then
      s = '0.000e0'
      return
    end if
    write (buf, '(es16.3e4)') x
    buf = adjustl(buf)
    at = index(buf, 'E')
    read (buf(at + 1:), *) e
    s = buf(1:at - 1) // 'e' // itoa(int(e, int64))
  end function fmt_exp3

  ! Option --name at position argi takes the next argument as a whole number: v, or msg
  ! (left empty on success). argi moves past the value.
  subroutine parse_count(name, argi, v, msg)
    character(*), intent(in) :: name
    integer, intent(inout) :: argi
    integer(int64), intent(out) :: v
    character(*), intent(inout) :: msg
    character(len=256) :: val
    integer :: c, ios
    v = 0
    argi = argi + 1
    if (argi > command_argument_count()) then
      msg = name // ' needs a value'
      return
    end if
    call get_command_argument(argi, val)
    ios = 0
    if (len_trim(val) == 0 .or. len_trim(val) > 18) ios = 1
    do c = 1, len_trim(val)
      if (index('0123456789', val(c:c)) == 0) ios = 1
    end do
    if (ios == 0) read (val, *, iostat=ios) v
    if (ios /= 0) msg = name // ' "' // trim(val) // '": expected a whole number'
  end subroutine parse_count

  ! Ends this process with an exit status, after flushing standard output and error.
  subroutine quit(status)
    integer, intent(in) :: status
    flush (output_unit)
    flush (error_unit)
    call c_exit(int(status, c_int))
  end subroutine quit

  ! Ends this process with SIGABRT, as a crash would (for --crash-at).
  subroutine crash()
    flush (output_unit)
    flush (error_unit)
    call c_abort()
  end subroutine crash

end module example_util
