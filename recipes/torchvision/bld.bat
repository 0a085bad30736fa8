@echo off
:: Thin shell: setup.py does the work; the recipe passes its settings in the environment.
:: distutils must use the VS2017 environment the vs2017 activation set up, not search for its own.
set DISTUTILS_USE_SDK=1
set MSSdk=1
"%PYTHON%" setup.py install --single-version-externally-managed --record=record.txt
if errorlevel 1 exit 1
