@echo off
:: Thin shell: build_torchvision.py decides the switches setup.py sees and runs it (see README.md).
:: The vs2017 activation has set DISTUTILS_USE_SDK, so distutils uses VS2017 14.11 as activated.
"%PYTHON%" "%RECIPE_DIR%\build_torchvision.py"
if errorlevel 1 exit 1
