from atssrepro.cli import main

main()
