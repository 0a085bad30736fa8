@echo off
:: Thin shell: the build logic lives in build_magma.py (unit-tested).
:: The vs2017 and nvcc activation scripts have already run in the build env.
:: Python is a build requirement only (MAGMA has no Python), so it is the build env's, not %PYTHON%.
"%BUILD_PREFIX%\python.exe" "%RECIPE_DIR%\build_magma.py"
if errorlevel 1 exit 1
