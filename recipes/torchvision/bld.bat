@echo off
:: Thin shell: setup.py does the work; the recipe passes its settings in the environment.
:: For 0.3.0 the vs2017 activation has set DISTUTILS_USE_SDK, so distutils uses VS2017 14.11 as activated.
"%PYTHON%" setup.py install --single-version-externally-managed --record=record.txt
if errorlevel 1 exit 1
