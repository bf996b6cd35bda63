from threadloom.cli.application import main

main()
