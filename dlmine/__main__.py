from dlmine.cli import main

main()
